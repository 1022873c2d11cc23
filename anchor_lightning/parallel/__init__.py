"""Scale-out: FSDP2 sharding over a device mesh (data parallel x sequence parallel)."""
