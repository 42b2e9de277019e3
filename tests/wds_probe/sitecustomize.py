"""Test probe, active only in processes started with this folder on PYTHONPATH and WDS_KEY_LOG set: every
sample timm's webdataset reader decodes is logged as "<RANK> <shard file> <key>" to WDS_KEY_LOG/<RANK>-<pid>.txt
(DataLoader workers are forked, so they inherit the patch). Lets a test see which process read which sample
while timm's own, unmodified train.py runs."""
import os

if os.environ.get('WDS_KEY_LOG'):
    import timm.data.readers.reader_wds as _reader_wds

    _decode = _reader_wds._decode

    def _logging_decode(sample, *args, **kwargs):
        rank = os.environ.get('RANK', '0')
        path = os.path.join(os.environ['WDS_KEY_LOG'], f'{rank}-{os.getpid()}.txt')
        with open(path, 'a') as f:
            f.write(f"{rank} {os.path.basename(sample.get('__url__', '?'))} {sample['__key__']}\n")
        return _decode(sample, *args, **kwargs)

    _reader_wds._decode = _logging_decode
