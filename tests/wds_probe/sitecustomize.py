"""Test probe, active only in processes started with this folder on PYTHONPATH:

- WDS_KEY_LOG=DIR: every sample timm's webdataset reader decodes is logged as "<RANK> <shard file> <key>" to
  DIR/<RANK>-<pid>.txt (DataLoader workers are forked, so they inherit the patch);
- DDP_WEIGHTS=DIR: the module each process wraps in DistributedDataParallel is saved at exit as
  DIR/rank<RANK>.safetensors.

Lets a test see which process read which sample, and what each process ended with, while timm's own,
unmodified train.py runs."""
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

if os.environ.get('DDP_WEIGHTS'):
    import atexit

    import torch

    _ddp_init = torch.nn.parallel.DistributedDataParallel.__init__
    _wrapped = []

    def _remembering_init(self, module, *args, **kwargs):
        _wrapped.append(module)
        _ddp_init(self, module, *args, **kwargs)

    @atexit.register
    def _save_wrapped():
        if _wrapped and os.getpid() == _pid:  # the training process, not a forked loader worker
            from safetensors.torch import save_file
            state = {k: v.detach().cpu().contiguous() for k, v in _wrapped[-1].state_dict().items()}
            save_file(state, os.path.join(os.environ['DDP_WEIGHTS'], f"rank{os.environ.get('RANK', '0')}.safetensors"))

    _pid = os.getpid()
    torch.nn.parallel.DistributedDataParallel.__init__ = _remembering_init
