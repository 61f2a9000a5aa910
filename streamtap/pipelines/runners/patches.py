"""The Beam classes streamtap patches in its job-server launchers, as exact edits of Beam's sources.

A `Patch` is either whole source files of ours (`files`) or Beam source files taken from a Beam
sources jar (`sources`: artifact -> paths) with exact text replacements (`edits`: a replacement
that does not match exactly once leaves the whole patch out, with a warning); `classes` are the
compiled classes to ship (with their nested classes). `streamtap.pipelines.runners.jobserver`
compiles them with `javac --release 8` into the launcher jar, which is first on the job server's
class path and first among the jars it stages to the cluster, so these classes win in the job
server and in the TaskManagers / executors. `without` says what is lost when a patch is left out.

- LOOPBACK (Flink and Spark): Beam's gRPC servers bind the loopback address, not every interface.
- sdf_residual_state (Flink): backport of Beam PR #39191, the keyed-state leak of polling SDFs.
- SPARK_STAGE_CHECKPOINTS (Spark): a batch task handles SDF self-checkpoints (defer_remainder).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LOOPBACK", "SPARK_STAGE_CHECKPOINTS", "Patch", "sdf_residual_state"]


@dataclass(frozen=True)
class Patch:
    """One patch of Beam classes (see the module docstring)."""

    name: str
    classes: tuple[str, ...]
    without: str
    files: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    edits: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


# Beam's ServerFactory.InetSocketAddressServerFactory with one change: the gRPC server binds the
# address it advertises (allocateAddressAndCreate: the loopback address; create: the host of the
# given URL) instead of every interface. The enclosing class is a stub so that javac emits the
# same synthetic constructors the real ServerFactory calls; only the nested class is kept.
_LOOPBACK_PATCH_SOURCE = """
package org.apache.beam.sdk.fn.server;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.netty.NettyServerBuilder;

public abstract class ServerFactory {
  public static ServerFactory createDefault() {
    return new InetSocketAddressServerFactory(UrlFactory.createDefault());
  }

  public static ServerFactory createWithPortSupplier(Supplier<Integer> portSupplier) {
    return new InetSocketAddressServerFactory(UrlFactory.createDefault(), portSupplier);
  }

  public abstract Server allocateAddressAndCreate(
      List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor)
      throws IOException;

  public abstract Server create(
      List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
      throws IOException;

  public interface UrlFactory {
    String createUrl(String address, int port);

    static UrlFactory createDefault() {
      return (host, port) -> host + ":" + port;
    }
  }

  public static class InetSocketAddressServerFactory extends ServerFactory {
    private final UrlFactory urlFactory;
    private final Supplier<Integer> portSupplier;

    private InetSocketAddressServerFactory(UrlFactory urlFactory) {
      this(urlFactory, () -> 0);
    }

    private InetSocketAddressServerFactory(UrlFactory urlFactory, Supplier<Integer> portSupplier) {
      this.urlFactory = urlFactory;
      this.portSupplier = portSupplier;
    }

    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor)
        throws IOException {
      InetSocketAddress address =
          new InetSocketAddress(InetAddress.getLoopbackAddress(), portSupplier.get());
      Server server = createServer(services, address);
      descriptor.setUrl(urlFactory.createUrl(address.getHostName(), server.getPort()));
      return server;
    }

    @Override
    public Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(descriptor.getUrl());
      if (!(address instanceof InetSocketAddress)) {
        throw new IllegalArgumentException(
            getClass().getSimpleName() + " requires a host:port socket address, got "
                + descriptor.getUrl());
      }
      return createServer(services, (InetSocketAddress) address);
    }

    private static Server createServer(List<BindableService> services, InetSocketAddress address)
        throws IOException {
      NettyServerBuilder builder =
          NettyServerBuilder.forAddress(address)
              .maxInboundMessageSize(Integer.MAX_VALUE)
              .permitKeepAliveTime(20, TimeUnit.SECONDS);
      for (BindableService service : services) {
        builder.addService(
            ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
      }
      return builder.build().start();
    }
  }
}
"""

LOOPBACK = Patch(
    name="loopback-only gRPC servers",
    classes=("org/apache/beam/sdk/fn/server/ServerFactory$InetSocketAddressServerFactory",),
    without="its gRPC servers listen on all interfaces",
    files={"org/apache/beam/sdk/fn/server/ServerFactory.java": _LOOPBACK_PATCH_SOURCE},
)

_SDF_STATE_TAG_METHOD = """
    /** All SDF self-checkpoint residuals of a key and window, keyed by their checkpoint id. */
    public static <T> org.apache.beam.runners.core.StateTag<
            org.apache.beam.sdk.state.MapState<String, WindowedValue<T>>>
        residualStateTag(Coder<WindowedValue<T>> residualCoder) {
      return StateTags.map(
          "sdf_checkpoint_residuals",
          org.apache.beam.sdk.coders.StringUtf8Coder.of(),
          residualCoder);
    }

    private static String constructSdfCheckpointId(String id, int index) {"""


def sdf_residual_state(flink_minor: str) -> Patch:
    """Beam issue #27648, fixed upstream by PR #39191 (after 2.75), for beam-runners-flink-<minor>.

    A polling SDF (defer_remainder) on the portable Flink runner registered a new keyed
    ValueState per self-checkpoint, never cleared: heap and checkpoint size grow until the
    TaskManager dies, and checkpoints stall long before that. Backport: one MapState per
    key/window, an entry removed when its timer fires.
    """
    return Patch(
        name="bounded SDF residual state (Beam PR #39191)",
        without="unbounded captures leak TaskManager memory (Beam issue #27648)",
        sources={
            "beam-runners-java-fn-execution": (
                "org/apache/beam/runners/fnexecution/control/BundleCheckpointHandlers.java",
            ),
            f"beam-runners-flink-{flink_minor}": (
                "org/apache/beam/runners/flink/translation/wrappers/streaming/"
                "ExecutableStageDoFnOperator.java",
                "org/apache/beam/runners/flink/translation/functions/"
                "FlinkExecutableStageFunction.java",
            ),
        },
        edits={
            "BundleCheckpointHandlers.java": (
                ("\n    private static String constructSdfCheckpointId(String id, int index) {",
                 _SDF_STATE_TAG_METHOD),
                (".state(stateNamespace, StateTags.value(tag, residualCoder))\n"
                 "                .write(\n",
                 ".state(stateNamespace, residualStateTag(residualCoder))\n"
                 "                .put(\n                    tag,\n"),
            ),
            "ExecutableStageDoFnOperator.java": (
                ("        WindowedValue stateValue =\n"
                 "            keyedStateInternals.state(namespace, StateTags.value(timerId, "
                 "residualCoder)).read();\n"
                 "        processElement(stateValue);\n",
                 "        org.apache.beam.sdk.state.MapState<String, WindowedValue<InputT>> "
                 "residuals =\n"
                 "            keyedStateInternals.state(\n"
                 "                namespace,\n"
                 "                StateAndTimerBundleCheckpointHandler.residualStateTag("
                 "residualCoder));\n"
                 "        WindowedValue stateValue = residuals.get(timerId).read();\n"
                 "        residuals.remove(timerId);\n"
                 "        if (stateValue != null) {\n"
                 "          processElement(stateValue);\n"
                 "        }\n"),
            ),
            "FlinkExecutableStageFunction.java": (
                ("            WindowedValue stateValue =\n"
                 "                sdfStateInternals\n"
                 "                    .state(timer.getNamespace(), StateTags.value("
                 "timer.getTimerId(), inputCoder))\n"
                 "                    .read();\n",
                 "            org.apache.beam.sdk.state.MapState<String, WindowedValue<InputT>> "
                 "residualMap =\n"
                 "                sdfStateInternals.state(\n"
                 "                    timer.getNamespace(),\n"
                 "                    BundleCheckpointHandlers.StateAndTimerBundleCheckpointHandler"
                 ".residualStateTag(inputCoder));\n"
                 "            WindowedValue stateValue =\n"
                 "                residualMap.get(timer.getTimerId()).read();\n"
                 "            residualMap.remove(timer.getTimerId());\n"),
            ),
        },
        classes=(
            "org/apache/beam/runners/fnexecution/control/BundleCheckpointHandlers",
            "org/apache/beam/runners/flink/translation/wrappers/streaming/"
            "ExecutableStageDoFnOperator",
            "org/apache/beam/runners/flink/translation/functions/FlinkExecutableStageFunction",
        ),
    )


# SDF self-checkpoints in batch: Beam 2.70's SparkExecutableStageFunction opens bundles without a
# BundleCheckpointHandler, so a bounded SDF that returns a residual (`defer_remainder`, which
# every streamtap stream does while it waits for data) fails its Spark task with
# "The ActiveBundle does not have a registered bundle checkpoint handler" and Spark retries the
# whole task (4 attempts, then the job fails). The patch collects the residuals of a bundle and
# processes them in the next bundle of the same task, after the smallest delay they asked for,
# until none is left: what Flink's batch runner does with its BundleCheckpointHandler.
_STAGE_FUNCTION = "org/apache/beam/runners/spark/translation/SparkExecutableStageFunction"
_STAGE_FUNCTION_OLD = """    try (RemoteBundle bundle =
        stageBundleFactory.getBundle(
            receiverFactory,
            timerReceiverFactory,
            stateRequestHandler,
            getBundleProgressHandler())) {
      FnDataReceiver<WindowedValue<?>> mainReceiver =
          Iterables.getOnlyElement(bundle.getInputReceivers().values());
      while (inputs.hasNext()) {
        WindowedValue<InputT> input = inputs.next();
        mainReceiver.accept(input);
      }
    }
  }
"""
_STAGE_FUNCTION_NEW = """    @SuppressWarnings("unchecked")
    Coder<WindowedValue<InputT>> residualCoder =
        (Coder<WindowedValue<InputT>>)
            (Coder<?>)
                Iterables.getOnlyElement(
                        stageBundleFactory
                            .getProcessBundleDescriptor()
                            .getRemoteInputDestinations())
                    .getCoder();
    Iterator<WindowedValue<InputT>> pending = inputs;
    while (true) {
      final List<org.apache.beam.model.fnexecution.v1.BeamFnApi.DelayedBundleApplication>
          residuals = new java.util.ArrayList<>();
      try (RemoteBundle bundle =
          stageBundleFactory.getBundle(
              receiverFactory,
              timerReceiverFactory,
              stateRequestHandler,
              getBundleProgressHandler(),
              null,
              response -> residuals.addAll(response.getResidualRootsList()))) {
        FnDataReceiver<WindowedValue<?>> mainReceiver =
            Iterables.getOnlyElement(bundle.getInputReceivers().values());
        while (pending.hasNext()) {
          WindowedValue<InputT> input = pending.next();
          mainReceiver.accept(input);
        }
      }
      if (residuals.isEmpty()) {
        return;
      }
      long delayMillis = Long.MAX_VALUE;
      List<WindowedValue<InputT>> next = new java.util.ArrayList<>();
      for (org.apache.beam.model.fnexecution.v1.BeamFnApi.DelayedBundleApplication residual :
          residuals) {
        next.add(
            org.apache.beam.sdk.util.CoderUtils.decodeFromByteArray(
                residualCoder, residual.getApplication().getElement().toByteArray()));
        long delay =
            residual.getRequestedTimeDelay().getSeconds() * 1000L
                + residual.getRequestedTimeDelay().getNanos() / 1_000_000L;
        delayMillis = Math.min(delayMillis, delay);
      }
      if (delayMillis > 0) {
        Thread.sleep(Math.min(delayMillis, 10_000L));
      }
      pending = next.iterator();
    }
  }
"""


SPARK_STAGE_CHECKPOINTS = Patch(
    name="SDF checkpoints in Spark batch tasks",
    without="a bounded stream that waits for data fails its Spark task",
    sources={"beam-runners-spark-3": (f"{_STAGE_FUNCTION}.java",)},
    edits={"SparkExecutableStageFunction.java": ((_STAGE_FUNCTION_OLD, _STAGE_FUNCTION_NEW),)},
    classes=(_STAGE_FUNCTION,),
)
