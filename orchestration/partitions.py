"""Partitions: shards of ~1,000 images as dynamic partitions (never one partition per image)."""

from dagster import DynamicPartitionsDefinition

shard_partitions = DynamicPartitionsDefinition(name="shards")
