"""Runner plug-ins: what streamtap fills in, refuses and watches on each Beam runner it knows.

`base.Runner` is the contract; `prism`, `flink` and `spark` implement it and are listed in
`streamtap.plugins`. Behind them: `jobserver` builds the Beam job-server launcher jar for Flink and
Spark (one builder, two specs), `patches` holds the Beam classes it patches, `java` finds the JDK
and drives Maven, `distributions` unpacks Flink and Spark from PyPI, `local` knows where
streamtap keeps downloads and the state of clusters `streamtap services` started.
"""
