"""Exceptions raised by the dataset readers and the shard tools."""


class DatasetFormatError(ValueError):
    """A dataset file or folder exists but is not what it should be (layout, keys, shapes, contents).

    The message always names the offending file (and the key or member inside it, where there is one).
    """


class ChecksumError(DatasetFormatError):
    """A file's checksum differs from the expected (official) one."""


class ShardLayoutError(ValueError):
    """Shard options that cannot be met by the data (e.g. ``--eval-shards N`` for a split whose size is not a
    multiple of N); raised before anything is written."""
