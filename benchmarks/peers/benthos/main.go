// Command benthos is the closest buildable stand-in for Redpanda Connect in scenario 4 of
// `python -m benchmarks`: the Benthos v4 engine that Redpanda Connect is built on, with its own
// http_client input (public/components/io), plus a Kafka output written here with franz-go.
//
// Redpanda Connect itself (github.com/redpanda-data/connect/v4) cannot be fetched here, and its
// kafka_franz output lives only in that module, so kafkaFranzStandin below reproduces what
// kafka_franz does with its default settings: one franz-go client, acks=all, idempotent
// producer, each batch produced and waited for before it is acknowledged to the input. Where it
// differs from kafka_franz, a comment says so.
package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/redpanda-data/benthos/v4/public/service"

	// Only the MIT-licensed core components: http_client (io); broker, mapping, chunker (pure).
	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
)

func main() {
	service.RunCLI(context.Background(), service.CLIOptSetBinaryName("benthos"))
}

// The fields keep kafka_franz's names and defaults, so a config for one reads the same for the
// other. Left out (not needed on a local PLAINTEXT broker): tls, sasl, partition, metadata
// headers, timestamps, and the advanced producer limits, which are fixed to kafka_franz's
// defaults in Connect below.
func outputSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Summary("Stand-in for Redpanda Connect's kafka_franz output (franz-go, acks=all, idempotent).").
		Fields(
			service.NewStringListField("seed_brokers"),
			service.NewInterpolatedStringField("topic"),
			service.NewInterpolatedStringField("key").Optional(),
			service.NewStringField("client_id").Default("redpanda-connect"),
			service.NewBoolField("idempotent_write").Default(true),
			service.NewStringEnumField("acks", "all", "leader", "none").Default("all"),
			// Unset, like kafka_franz: franz-go then prefers snappy, falling back to none.
			service.NewStringEnumField("compression", "none", "gzip", "snappy", "lz4", "zstd").Optional(),
			service.NewIntField("max_in_flight").Default(10),
			service.NewBatchPolicyField("batching"),
		)
}

func init() {
	service.MustRegisterBatchOutput("kafka_franz_standin", outputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			var policy service.BatchPolicy
			maxInFlight, err := conf.FieldInt("max_in_flight")
			if err != nil {
				return nil, policy, 0, err
			}
			if policy, err = conf.FieldBatchPolicy("batching"); err != nil {
				return nil, policy, 0, err
			}
			out, err := newKafkaFranzStandin(conf, mgr.Logger())
			return out, policy, maxInFlight, err
		})
}

type kafkaFranzStandin struct {
	opts  []kgo.Opt
	topic *service.InterpolatedString
	key   *service.InterpolatedString
	log   *service.Logger

	mu     sync.Mutex
	client *kgo.Client
}

func newKafkaFranzStandin(conf *service.ParsedConfig, log *service.Logger) (*kafkaFranzStandin, error) {
	brokers, err := conf.FieldStringList("seed_brokers")
	if err != nil {
		return nil, err
	}
	clientID, err := conf.FieldString("client_id")
	if err != nil {
		return nil, err
	}
	o := &kafkaFranzStandin{log: log}
	if o.topic, err = conf.FieldInterpolatedString("topic"); err != nil {
		return nil, err
	}
	if conf.Contains("key") {
		if o.key, err = conf.FieldInterpolatedString("key"); err != nil {
			return nil, err
		}
	}
	// kafka_franz's client settings with its defaults (its connection and producer-limit fields),
	// spelled out where they differ from franz-go's own defaults. Not copied: its bridge from
	// franz-go's log to Benthos' logger (franz-go logs nothing here, which at WARN costs nothing).
	o.opts = []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ClientID(clientID),
		kgo.MetadataMaxAge(5 * time.Minute),
		kgo.RequestTimeoutOverhead(10 * time.Second),
		kgo.ConnIdleTimeout(20 * time.Second), // franz-go: 30 s
		kgo.ProducerBatchMaxBytes(1 << 20),    // "1MiB"; franz-go: 1,000,012
		kgo.BrokerMaxWriteBytes(100 << 20),
		kgo.ProduceRequestTimeout(10 * time.Second),
		kgo.MaxBufferedRecords(10000), // franz-go: 50,000
		kgo.MaxProduceRequestsInflightPerBroker(1),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // murmur2 of the key, like Java's
		kgo.AllowAutoTopicCreation(),
	}
	idempotent, err := conf.FieldBool("idempotent_write")
	if err != nil {
		return nil, err
	}
	acks, err := conf.FieldString("acks")
	if err != nil {
		return nil, err
	}
	if idempotent && acks != "all" {
		return nil, fmt.Errorf("idempotent_write requires acks to be \"all\", got %q", acks)
	}
	if !idempotent {
		o.opts = append(o.opts, kgo.DisableIdempotentWrite())
	}
	o.opts = append(o.opts, kgo.RequiredAcks(map[string]kgo.Acks{
		"all": kgo.AllISRAcks(), "leader": kgo.LeaderAck(), "none": kgo.NoAck(),
	}[acks]))
	if conf.Contains("compression") {
		name, err := conf.FieldString("compression")
		if err != nil {
			return nil, err
		}
		o.opts = append(o.opts, kgo.ProducerBatchCompression(map[string]kgo.CompressionCodec{
			"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
			"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
		}[name]))
	}
	return o, nil
}

// Connect pings the brokers so a wrong address fails here, where Benthos backs off and retries,
// rather than in every write.
func (o *kafkaFranzStandin) Connect(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.client != nil {
		return nil
	}
	client, err := kgo.NewClient(o.opts...)
	if err != nil {
		return err
	}
	if err := client.Ping(ctx); err != nil {
		client.Close()
		return err
	}
	o.client = client
	return nil
}

// WriteBatch returns only once every record is acknowledged (acks=all), so the input's ack, and
// with it the at-least-once guarantee, follows the broker's. An error makes Benthos nack the
// batch and the input retry it.
//
// Produce plus a wait for every callback, as kafka_franz does, rather than ProduceSync: since
// franz-go v1.20 a partition lingers 10 ms for more records by default, and ProduceSync cuts
// that linger short, which would give this stand-in smaller produce requests than kafka_franz.
func (o *kafkaFranzStandin) WriteBatch(ctx context.Context, batch service.MessageBatch) error {
	o.mu.Lock()
	client := o.client
	o.mu.Unlock()
	if client == nil {
		return service.ErrNotConnected
	}
	records := make([]*kgo.Record, 0, len(batch))
	for _, msg := range batch {
		value, err := msg.AsBytes()
		if err != nil {
			return err
		}
		topic, err := o.topic.TryString(msg)
		if err != nil {
			return fmt.Errorf("topic interpolation: %w", err)
		}
		record := &kgo.Record{Topic: topic, Value: value}
		if o.key != nil {
			if record.Key, err = o.key.TryBytes(msg); err != nil {
				return fmt.Errorf("key interpolation: %w", err)
			}
		}
		records = append(records, record)
	}
	var (
		wg     sync.WaitGroup
		errsMu sync.Mutex
		errs   []error
	)
	wg.Add(len(records))
	for _, record := range records {
		client.Produce(ctx, record, func(_ *kgo.Record, err error) {
			if err != nil {
				errsMu.Lock()
				errs = append(errs, err)
				errsMu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (o *kafkaFranzStandin) Close(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.client != nil {
		o.client.Close()
		o.client = nil
	}
	return nil
}
