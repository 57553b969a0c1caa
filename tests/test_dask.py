"""Dask: block-wise transform and distributed search on a real LocalCluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier

from .conftest import make_images, save_pngs

da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

COMMON = dict(backbone="mobilenet_v2", weights=None, input_size=32)


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each: a real cluster on this machine."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        worker_class=distributed.Nanny,
    ) as cluster, distributed.Client(cluster) as client:
        yield client


def local(X, **params):
    return CNNFeatureExtractor(**{**COMMON, **params}).fit(X).transform(X)


def test_dask_array_of_images_equals_local(client):
    X = make_images(30)
    lazy = CNNFeatureExtractor(**COMMON).fit(da.from_array(X, chunks=(7, 32, 32, 3)))
    result = lazy.transform(da.from_array(X, chunks=(7, 8, 32, 3)))
    assert isinstance(result, da.Array) and result.shape == (30, 1280)
    np.testing.assert_array_equal(result.compute(), local(X))


def test_float_scale_is_decided_for_the_whole_dask_array(client):
    # A block of dark images must not be read as 0-1 when the array is 0-255.
    X = make_images(12).astype(np.float32)
    X[:6] = np.minimum(X[:6], 1.0)
    result = CNNFeatureExtractor(**COMMON).fit(X).transform(da.from_array(X, chunks=6))
    # Read as 0-1, the dark block's features would be far off; the last bits
    # of features near 0 may differ between batch compositions (seen once:
    # 1.6e-17 on values near 1e-12 on a loaded machine).
    np.testing.assert_allclose(result.compute(), local(X), rtol=1e-6, atol=1e-9)


def test_paths_as_array_bag_and_dataframe_keep_order_and_index(client, tmp_path):
    X = make_images(20)
    paths = save_pngs(X, tmp_path)
    expected = local(X)
    extractor = CNNFeatureExtractor(**COMMON).fit(paths)
    as_array = extractor.transform(da.from_array(np.array(paths, dtype=object), chunks=6))
    np.testing.assert_array_equal(as_array.compute(), expected)
    as_bag = extractor.transform(db.from_sequence(paths, npartitions=3))
    np.testing.assert_array_equal(as_bag.compute(), expected)

    frame = pd.DataFrame({"path": paths}, index=pd.Index(np.arange(100, 120) * 7, name="id"))
    lazy = extractor.transform(dd.from_pandas(frame, npartitions=3))
    assert isinstance(lazy, dd.DataFrame)
    computed = lazy.compute()
    pd.testing.assert_index_equal(computed.index, frame.index)
    assert list(computed.columns) == list(extractor.get_feature_names_out())
    np.testing.assert_array_equal(computed.to_numpy(), expected)
    series = extractor.transform(dd.from_pandas(frame, npartitions=2)["path"]).compute()
    np.testing.assert_array_equal(series.to_numpy(), expected)


def test_each_worker_builds_the_network_once(client):
    from sktransfer import _network

    def builds():
        return _network.builds

    before = client.run(builds)
    X = make_images(40, seed=5)
    CNNFeatureExtractor(**{**COMMON, "input_size": 40}).fit(X).transform(
        da.from_array(X, chunks=4)
    ).compute()
    after = client.run(builds)
    # Ten blocks, at most one build per worker (input_size=40 is new here).
    assert sum(after[w] - before[w] for w in after) <= len(after)


def test_file_paths_never_ship_decoded_images(client, tmp_path):
    X = make_images(24, size=64)
    paths = save_pngs(X, tmp_path)
    extractor = CNNFeatureExtractor(**COMMON, layer=0, pooling="avg").fit(paths)
    lazy = extractor.transform(da.from_array(np.array(paths, dtype=object), chunks=8))
    persisted = client.persist(lazy)
    distributed.wait(persisted)

    def task_sizes(dask_scheduler):
        return [ts.nbytes for ts in dask_scheduler.tasks.values() if ts.nbytes > 0]

    sizes = client.run_on_scheduler(task_sizes)
    # The largest object any task produced is a feature block, far smaller
    # than one decoded block of images (8 x 64 x 64 x 3 float32).
    assert max(sizes) < 8 * 64 * 64 * 3 * 4 / 10
    np.testing.assert_array_equal(persisted.compute(), local(X, layer=0))


def test_a_killed_worker_is_retried_without_wrong_or_missing_rows(client):
    X = make_images(160, size=96, seed=7)
    expected = local(X, input_size=96, cache=False)
    extractor = CNNFeatureExtractor(**{**COMMON, "input_size": 96}, batch_size=8, cache=False).fit(X)
    future = client.compute(extractor.transform(da.from_array(X, chunks=8)))
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]

    def done(dask_scheduler):
        return sum(ts.state == "memory" for ts in dask_scheduler.tasks.values())

    deadline = time.monotonic() + 120
    while client.run_on_scheduler(done) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not future.done(), "the transform finished before a worker could be killed"
    os.kill(victim, signal.SIGKILL)
    result = future.result(timeout=300)
    np.testing.assert_array_equal(result, expected)
    client.wait_for_workers(2, timeout=120)
    assert victim not in client.run(os.getpid).values()


def test_grid_search_under_the_dask_joblib_backend_equals_local(client, tmp_path):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    X = make_images(24, seed=3)
    y = np.array(["a", "b", "c"] * 8)
    pipe = make_pipeline(
        CNNFeatureExtractor(**COMMON, memory=tmp_path / "features"),
        LogisticRegression(max_iter=200),
    )
    grid = {"cnnfeatureextractor__layer": [-1, -2], "logisticregression__C": [0.1, 1.0]}
    with joblib.parallel_backend("dask"):
        distributed_search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    local_search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    np.testing.assert_array_equal(
        distributed_search.cv_results_["mean_test_score"],
        local_search.cv_results_["mean_test_score"],
    )
    # The workers filled the shared disk cache.
    assert os.listdir(tmp_path / "features")


def test_fine_tuning_cross_validation_under_dask_equals_local(client):
    import joblib
    from sklearn.model_selection import cross_val_score

    X = make_images(24, seed=4)
    y = np.array(["a", "b"] * 12)
    clf = FineTunedCNNClassifier(
        **COMMON, head_epochs=2, epochs=1, augment=False, early_stopping=False,
        random_state=0,
    )
    with joblib.parallel_backend("dask"):
        distributed_scores = cross_val_score(clf, X, y, cv=2, scoring="neg_log_loss")
    local_scores = cross_val_score(clf, X, y, cv=2, scoring="neg_log_loss")
    np.testing.assert_allclose(distributed_scores, local_scores, rtol=1e-5)


def test_the_package_works_without_dask():
    code = (
        "import sys, numpy as np\n"
        "sys.modules['dask'] = None\n"
        "from sktransfer import CNNFeatureExtractor\n"
        "X = np.zeros((2, 32, 32, 3), np.uint8)\n"
        "e = CNNFeatureExtractor('mobilenet_v2', weights=None, input_size=32)\n"
        "print(e.fit_transform(X).shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(2, 1280)" in out.stdout


def test_dask_structure_errors_are_clear():
    with pytest.raises(ValueError, match="images must have shape"):
        CNNFeatureExtractor(**COMMON).fit(da.zeros((4, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="one 32x32 image .* Reshape your data"):
        CNNFeatureExtractor(**COMMON).fit(da.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="one column of file paths"):
        CNNFeatureExtractor(**COMMON).fit(
            dd.from_pandas(pd.DataFrame({"a": ["x"], "b": ["y"]}), npartitions=1)
        )
