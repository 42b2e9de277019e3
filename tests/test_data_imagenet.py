"""ImageNet-layout folders -> shards with the original JPEG bytes; listing rules and errors."""
import json
import os
import tarfile

import pytest

from timm_identity.cli import main
from timm_identity.data.errors import DatasetFormatError
from timm_identity.data.imagenet import list_imagenet, read_val_labels
from timm_identity.data.shards import INFO_NAME, verify_shards
from timm_identity.data.testing import make_tiny_imagenet

WNIDS = ('n01440764', 'n01443537', 'n01484850')


def shard_imagenet(root, out, *extra):
    return main(['shards', 'imagenet', str(root), '--out', str(out), '--no-progress', '--workers', '1',
                 '--shard-samples', '4', *extra])


def read_shards(out, split):
    """{key: (member extension, bytes, label)} from every shard of a split, in _info.json order."""
    info = json.loads((out / INFO_NAME).read_text())
    samples = {}
    for filename in info['splits'][split]['filenames']:
        with tarfile.open(out / filename) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split('.', 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return {k: (next(e for e in v if e != 'cls'), v[next(e for e in v if e != 'cls')], int(v['cls']))
            for k, v in samples.items()}


@pytest.mark.parametrize('val_layout', ['folders', 'flat'])
def test_round_trip_keeps_jpeg_bytes_and_sorted_wnid_labels(tmp_path, val_layout):
    # wnids written out of order: the class index must still follow the sorted order
    written = make_tiny_imagenet(tmp_path / 'in', wnids=(WNIDS[2], WNIDS[0], WNIDS[1]), val_layout=val_layout)
    extra = ['--val-labels', str(tmp_path / 'in' / 'val_labels.txt')] if val_layout == 'flat' else []
    assert shard_imagenet(tmp_path / 'in', tmp_path / 'out', *extra) == 0

    info = json.loads((tmp_path / 'out' / INFO_NAME).read_text())
    assert info['classes'] == list(WNIDS)
    assert info['splits']['train']['shard_lengths'] == [4, 4, 1]
    assert info['splits']['val']['class_counts'] == [2, 2, 2]
    for split in ('train', 'val'):
        samples = read_shards(tmp_path / 'out', split)
        assert len(samples) == len(written[split])
        for rel, data in written[split].items():
            key = os.path.basename(rel).split('.')[0]
            wnid = rel.split('/')[0] if split == 'train' or val_layout == 'folders' else None
            ext, stored, label = samples[key]
            assert ext == 'jpg' and stored == data  # byte for byte, no re-encode
            if wnid:
                assert label == WNIDS.index(wnid)
    assert verify_shards(tmp_path / 'out', decode=True, progress=False).ok


def test_timm_reads_imagenet_shards(tmp_path):
    import timm.data
    make_tiny_imagenet(tmp_path / 'in', num_train_per_class=2)
    assert shard_imagenet(tmp_path / 'in', tmp_path / 'out', '--no-shuffle') == 0
    dataset = timm.data.create_dataset('wds/imagenet', root=str(tmp_path / 'out'), split='val')
    got = [(img.size, label) for img, label in dataset]
    assert got == [((16, 16), 0)] * 2 + [((16, 16), 1)] * 2 + [((16, 16), 2)] * 2


def test_rerun_rewrites_the_shard_of_a_replaced_image(tmp_path):
    make_tiny_imagenet(tmp_path / 'in')
    out = tmp_path / 'out'
    assert shard_imagenet(tmp_path / 'in', out, '--no-shuffle', '--splits', 'train') == 0
    stamps = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f.endswith('.tar')}
    # another image under the same name (sorted by class and key, WNIDS[1]_2 is the 6th: shard 1);
    # a file written later has a later modification time
    replaced = tmp_path / 'in' / 'train' / WNIDS[1] / f'{WNIDS[1]}_2.JPEG'
    new_bytes = make_tiny_imagenet(tmp_path / 'other', seed=9)['train'][f'{WNIDS[1]}/{WNIDS[1]}_2.JPEG']
    mtime = os.stat(replaced).st_mtime_ns
    replaced.write_bytes(new_bytes)
    os.utime(replaced, ns=(mtime + 10**9, mtime + 10**9))
    assert shard_imagenet(tmp_path / 'in', out, '--no-shuffle', '--splits', 'train') == 0
    assert {f for f, t in stamps.items() if os.stat(out / f).st_mtime_ns != t} == {'imagenet-train-000001.tar'}
    assert read_shards(out, 'train')[f'{WNIDS[1]}_2'][1] == new_bytes
    assert verify_shards(out, progress=False).ok


def test_png_disguised_as_jpeg_is_stored_as_png(tmp_path):
    from PIL import Image
    make_tiny_imagenet(tmp_path / 'in')
    Image.new('RGB', (4, 4)).save(tmp_path / 'in' / 'train' / WNIDS[0] / f'{WNIDS[0]}_0.JPEG', format='PNG')
    assert shard_imagenet(tmp_path / 'in', tmp_path / 'out', '--splits', 'train') == 0
    assert read_shards(tmp_path / 'out', 'train')[f'{WNIDS[0]}_0'][0] == 'png'


@pytest.mark.parametrize('content', [b'', b'just some text', b'GIF89a....'])
def test_non_image_file_is_a_clear_error_and_nothing_looks_finished(tmp_path, content, capsys):
    make_tiny_imagenet(tmp_path / 'in')
    bad = tmp_path / 'in' / 'train' / WNIDS[2] / 'notes.JPEG'
    bad.write_bytes(content)
    out = tmp_path / 'out'
    assert shard_imagenet(tmp_path / 'in', out, '--no-shuffle', '--splits', 'train') == 1
    assert f'shards imagenet: error: {bad}: not an image (first bytes' in capsys.readouterr().err
    # sorted by class, the bad file is in the last shard: earlier complete shards may stay, never a partial
    # one under a final name, and never _info.json
    assert sorted(os.listdir(out)) == ['.shard-state', 'imagenet-train-000000.tar', 'imagenet-train-000001.tar']
    assert not verify_shards(out, progress=False).ok


def test_val_class_missing_from_train(tmp_path):
    make_tiny_imagenet(tmp_path / 'in')
    os.rename(tmp_path / 'in' / 'val' / WNIDS[1], tmp_path / 'in' / 'val' / 'n09999999')
    with pytest.raises(DatasetFormatError, match=r'val/n09999999: class folder not in train/'):
        list_imagenet(tmp_path / 'in', 'val')
    make_tiny_imagenet(tmp_path / 'flat', val_layout='flat')
    labels = tmp_path / 'flat' / 'val_labels.txt'
    labels.write_text(labels.read_text().replace(WNIDS[1], 'n09999999'))
    with pytest.raises(DatasetFormatError, match=rf'{labels}:3: wnid n09999999 has no class folder in train/'):
        list_imagenet(tmp_path / 'flat', 'val', val_labels=labels)


def test_missing_train_folder_and_labels_file(tmp_path):
    make_tiny_imagenet(tmp_path / 'in', val_layout='flat')
    with pytest.raises(DatasetFormatError, match=r'flat val/ .* needs a labels file'):
        list_imagenet(tmp_path / 'in', 'val')
    os.rename(tmp_path / 'in' / 'train', tmp_path / 'in' / 'training')
    with pytest.raises(FileNotFoundError, match=r'train: missing'):
        list_imagenet(tmp_path / 'in', 'train')


def test_stray_files_and_folders_are_rejected(tmp_path):
    make_tiny_imagenet(tmp_path / 'in')
    (tmp_path / 'in' / 'train' / 'README.txt').write_text('hi')
    with pytest.raises(DatasetFormatError, match=r"train: expected only class folders .*README.txt"):
        list_imagenet(tmp_path / 'in')
    os.remove(tmp_path / 'in' / 'train' / 'README.txt')
    os.makedirs(tmp_path / 'in' / 'train' / 'cats')
    with pytest.raises(DatasetFormatError, match=r"must be wnids like n01440764, found \['cats'\]"):
        list_imagenet(tmp_path / 'in')


def test_labels_file_formats(tmp_path):
    classes = list(WNIDS)
    for text in ('a.JPEG n01443537\nb 2\n\n# comment\n',
                 'a,n01443537\nb.JPEG,n01484850\n',
                 'ImageId,PredictionString\na,n01443537 1 2 3 4 n01443537 5 6 7 8\nb,n01484850 1 2 3 4\n'):
        path = tmp_path / 'labels.txt'
        path.write_text(text)
        assert read_val_labels(path, classes) == {'a': 1, 'b': 2}
    for text, message in (('a 3\n', r'class index 3 is outside \[0, 3\)'),
                          ('a cat\n', "label 'cat' is neither a wnid nor a class index"),
                          ('a 1\na 2\n', 'second label for image a'),
                          ('a 1 2\n', 'expected "<image> <wnid or class index>"')):
        path.write_text(text)
        with pytest.raises(DatasetFormatError, match=message):
            read_val_labels(path, classes)


def test_labels_and_images_must_match(tmp_path):
    make_tiny_imagenet(tmp_path / 'in', val_layout='flat')
    labels = tmp_path / 'in' / 'val_labels.txt'
    lines = labels.read_text().splitlines()
    labels.write_text('\n'.join(lines[1:]) + '\n')
    with pytest.raises(DatasetFormatError, match=r'ILSVRC2012_val_00000001.JPEG: no label for it'):
        list_imagenet(tmp_path / 'in', 'val', val_labels=labels)
    labels.write_text('\n'.join(lines + ['ILSVRC2012_val_00000099.JPEG n01440764']) + '\n')
    with pytest.raises(DatasetFormatError, match=r'1 label\(s\) for images not in'):
        list_imagenet(tmp_path / 'in', 'val', val_labels=labels)


def test_empty_train_class_folder_is_an_error(tmp_path):
    """timm's ImageFolder skips an empty class folder, which would shift every later class index."""
    make_tiny_imagenet(tmp_path / 'in')
    (tmp_path / 'in' / 'train' / 'n01443000').mkdir()
    for split in ('train', 'val'):
        with pytest.raises(DatasetFormatError, match=r'n01443000: an empty class folder'):
            list_imagenet(tmp_path / 'in', split)


def test_labels_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_bytes('\ufeffa.JPEG n01443537\nb 2\n'.encode('utf-8'))
    assert read_val_labels(path, list(WNIDS)) == {'a': 1, 'b': 2}


def test_truncated_jpeg_fails_verify_without_decode(tmp_path, capsys):
    make_tiny_imagenet(tmp_path / 'in')
    victim = next((tmp_path / 'in' / 'train' / WNIDS[0]).iterdir())
    victim.write_bytes(victim.read_bytes()[:-40])  # cut off: the magic bytes are still there
    assert shard_imagenet(tmp_path / 'in', tmp_path / 'out') == 0
    report = verify_shards(tmp_path / 'out', progress=False)
    assert any('is truncated (no JPG end marker ffd9' in p for p in report.problems), report.problems


def test_shard_bytes_zero_is_an_argument_error(tmp_path, capsys):
    make_tiny_imagenet(tmp_path / 'in')
    with pytest.raises(SystemExit) as e:
        main(['shards', 'imagenet', str(tmp_path / 'in'), '--out', str(tmp_path / 'out'), '--shard-bytes', '0'])
    assert e.value.code == 2 and '--shard-bytes: must be at least 1 byte' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
