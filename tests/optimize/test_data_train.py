"""Training data for the pipeline: .npz, class-subfolder images, module:function datasets, and the
checks against the model (sample shapes, label range) that run before any training."""

from __future__ import annotations

import numpy as np
import pytest

from tests.optimize.conftest import write_npz
from tflc.errors import BadInput
from tflc.load.data import load_labelled, materialize
from tflc.load.models import IOSpec

IMAGE = [IOSpec("image", (1, 8, 8, 1))]


def test_npz_is_loaded_and_checked(tmp_path):
    path = write_npz(tmp_path / "t.npz", x=np.zeros((5, 8, 8, 1), np.float32),
                     y=np.array([0, 1, 2, 3, 9]))
    data = load_labelled(path, IMAGE, 10)
    assert data.in_memory and data.num_samples == 5
    assert data.y.dtype == np.int64


def test_one_hot_labels_become_indices(tmp_path):
    path = write_npz(tmp_path / "t.npz", x=np.zeros((3, 8, 8, 1), np.float32),
                     y=np.eye(10, dtype=np.float32)[[4, 0, 7]])
    assert load_labelled(path, IMAGE, 10).y.tolist() == [4, 0, 7]


def test_shapes_that_do_not_fit_the_model(tmp_path):
    path = write_npz(tmp_path / "t.npz", x=np.zeros((5, 8, 8), np.float32), y=np.zeros(5))
    with pytest.raises(BadInput) as info:
        load_labelled(path, IMAGE, 10)
    message = str(info.value)
    assert str(path) in message and "(8, 8, 1)" in message and "(5, 8, 8)" in message


def test_labels_outside_the_output_range(tmp_path):
    path = write_npz(tmp_path / "t.npz", x=np.zeros((3, 8, 8, 1), np.float32),
                     y=np.array([0, 10, 12]))
    with pytest.raises(BadInput) as info:
        load_labelled(path, IMAGE, 10)
    assert "labels 0..12" in str(info.value) and "10 classes (0..9)" in str(info.value)


def test_labels_and_samples_must_match_in_number(tmp_path):
    path = write_npz(tmp_path / "t.npz", x=np.zeros((3, 8, 8, 1), np.float32), y=np.zeros(4))
    with pytest.raises(BadInput, match="4 labels for 3 samples"):
        load_labelled(path, IMAGE, 10)


def test_unknown_source(tmp_path):
    with pytest.raises(BadInput, match="no such file or folder"):
        load_labelled(str(tmp_path / "nothing.npz"), IMAGE, 10)


def test_image_folder_one_subfolder_per_class(tmp_path):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(2 + label):
            pixels = np.full((16, 16), 60 * (label + 1) + i, np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    data = load_labelled(tmp_path, IMAGE, 2)
    assert data.x[0].shape == (5, 8, 8, 1)  # resized to the model's input
    assert data.y.tolist() == [0, 0, 1, 1, 1]  # sorted folder names are the classes
    assert data.x[0].max() <= 1.0 and abs(data.x[0][0].mean() - 60 / 255) < 1e-3
    (tmp_path / "emu").mkdir()  # a third class for a two-class model
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "emu" / "0.png")
    with pytest.raises(BadInput, match="labels 0..2 but the model's output has 2 classes"):
        load_labelled(tmp_path, IMAGE, 2)


def test_folder_without_class_subfolders(tmp_path):
    with pytest.raises(BadInput, match="no class subfolders"):
        load_labelled(tmp_path, IMAGE, 10)


DATASET_MODULE = '''
import numpy as np
import tensorflow as tf

def good():
    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 10
    return tf.data.Dataset.from_tensor_slices((x, y))

def bad_labels():
    x = np.zeros((8, 8, 8, 1), "float32")
    return tf.data.Dataset.from_tensor_slices((x, np.full(8, 11))).batch(4)

def bad_shape():
    return tf.data.Dataset.from_tensor_slices((np.zeros((8, 4, 4, 1), "float32"), np.zeros(8)))

def not_a_dataset():
    return [1, 2, 3]
'''


@pytest.fixture()
def dataset_module(tmp_path):
    path = tmp_path / "my_data.py"
    path.write_text(DATASET_MODULE)
    return path


def test_module_function_dataset(dataset_module):
    data = load_labelled(f"{dataset_module}:good", IMAGE, 10)
    assert not data.in_memory and not data.batched
    full = materialize(data)
    assert full.x[0].shape == (40, 8, 8, 1) and full.y.tolist()[:3] == [0, 1, 2]
    assert data.sample_inputs(7)[0].shape == (7, 8, 8, 1)


@pytest.mark.parametrize("function, expected", [
    ("bad_labels", "labels 11..11 but the model's output has 10 classes"),
    ("bad_shape", "samples of shape (4, 4, 1) but the model's input 'image' expects (8, 8, 1)"),
    ("not_a_dataset", "returned list, expected a tf.data.Dataset of (x, y)"),
    ("missing", "has no function 'missing'"),
])
def test_module_function_mistakes(dataset_module, function, expected):
    with pytest.raises(BadInput) as info:
        load_labelled(f"{dataset_module}:{function}", IMAGE, 10)
    assert expected in str(info.value)


def test_unimportable_module():
    with pytest.raises(BadInput, match="cannot import 'no_such_module_xyz'"):
        load_labelled("no_such_module_xyz:data", IMAGE, 10)
