import pytest
from PIL import Image

from sktransfer import load_image_folder


def test_paths_and_labels_sorted(image_folder, labels):
    root, paths = image_folder
    (root / "cat" / "notes.txt").write_text("not an image")
    nested = root / "dog" / "more"
    nested.mkdir()
    Image.new("RGB", (4, 4)).save(nested / "z.jpg")
    found, found_labels = load_image_folder(root)
    assert list(found_labels) == sorted(list(labels) + ["dog"])
    assert str(nested / "z.jpg") in list(found)
    assert not any(p.endswith(".txt") for p in found)
    assert found.dtype == object and len(found) == len(found_labels) == 13


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no subfolders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_image_folder(tmp_path)
