"""Source types: one module (or package) per protocol, each a SourceConfig and its Connector."""
