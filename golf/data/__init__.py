"""Challenge data: shard format, preparation, and the training token stream."""
