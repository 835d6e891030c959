"""eventbus: a typed, in-process event bus with an append-only store."""
