"""Preprocessing (normalisation, GCN, ZCA) and crop/flip augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from relaxjax import data


def correlated_images(n=4000, seed=0) -> np.ndarray:
    """(n, 2, 2, 3) float images with a strongly non-identity covariance."""
    mix = np.random.default_rng(99).normal(size=(12, 12)) + 2 * np.eye(12)  # fixed
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 12)) @ mix + 5.0).reshape(n, 2, 2, 3)


def test_channel_stats_and_normalize():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    x[..., 1] //= 4
    stats = data.channel_stats(x)
    np.testing.assert_allclose(stats.mean, x.reshape(-1, 3).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, x.reshape(-1, 3).std(0), rtol=1e-9)
    z = data.normalize(x, stats)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, atol=1e-5)


def test_global_contrast_normalize():
    x = np.random.default_rng(1).integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)
    x[0] = 7  # constant image: only centred
    g = data.global_contrast_normalize(x)
    np.testing.assert_allclose(g.reshape(5, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(g[1:].reshape(4, -1).std(1, ddof=1), 1, atol=1e-5)
    assert np.all(g[0] == 0)


def test_zca_gives_identity_covariance():
    x = correlated_images()
    zca = data.fit_zca(x, eps=1e-5)
    w = data.apply_zca(zca, x)
    assert w.shape == x.shape and w.dtype == np.float32
    flat = w.reshape(len(w), -1).astype(np.float64)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(flat, rowvar=False), np.eye(12), atol=1e-3)
    np.testing.assert_allclose(zca.matrix, zca.matrix.T, atol=1e-5)
    # fitted on train, applied to a fresh sample of the same distribution: still ~white
    test = data.apply_zca(zca, correlated_images(seed=1)).reshape(-1, 12)
    assert np.abs(np.cov(test, rowvar=False) - np.eye(12)).max() < 0.15


def test_zca_matches_original_svd_formula():
    """process_cifar.py: W = U diag(1/(S + eps)) U^T from the SVD of centred data / sqrt(n-1)."""
    x = correlated_images(n=500).reshape(500, -1)
    eps = 0.1  # large, so that where eps enters matters
    d = (x - x.mean(0)).T / np.sqrt(len(x) - 1)
    u, s, _ = np.linalg.svd(d, full_matrices=False)
    w_ref = u @ np.diag(1.0 / (s + eps)) @ u.T
    zca = data.fit_zca(x, eps=eps)
    np.testing.assert_allclose(zca.matrix, w_ref, rtol=1e-4, atol=1e-5)


def test_zca_whiten_pipeline():
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (300, 4, 4, 3), dtype=np.uint8)
    te = rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    wtr, wte, zca = data.zca_whiten(tr, te)
    assert wtr.shape == tr.shape and wte.shape == te.shape and zca.matrix.shape == (48, 48)
    gte = data.global_contrast_normalize(te)
    np.testing.assert_allclose(wte, data.apply_zca(zca, gte), atol=1e-5)


def images(n=64, h=8, w=8, c=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, (n, h, w, c), dtype=np.uint8)


def reference_crop_flip(x, params, padding):
    """Per-image loop reference for the vectorised implementation."""
    out = np.empty_like(x)
    h, w = x.shape[1:3]
    for i in range(len(x)):
        p = np.pad(x[i], [(padding, padding), (padding, padding), (0, 0)])
        crop = p[params.dy[i] : params.dy[i] + h, params.dx[i] : params.dx[i] + w]
        out[i] = crop[:, ::-1] if params.flip[i] else crop
    return out


def test_crop_flip_matches_reference_and_is_deterministic():
    x = images()
    a = data.random_crop_flip(x, 123)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, data.random_crop_flip(x, np.random.default_rng(123)))
    assert not np.array_equal(a, data.random_crop_flip(x, 124))
    params = data.sample_crop_flip(123, len(x), padding=4)
    np.testing.assert_array_equal(a, reference_crop_flip(x, params, 4))


def test_flips_happen():
    x = images(n=200)
    out = data.random_crop_flip(x, 0, padding=0)
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert 60 < mirrored.sum() < 140  # about half


def test_crops_happen():
    x = images(n=200)
    params = data.sample_crop_flip(5, len(x), padding=4, flip=False)
    assert params.dy.min() == 0 and params.dy.max() == 8 and len(set(params.dx.tolist())) == 9
    out = data.apply_crop_flip(x, params, padding=4)
    shifted = (params.dy != 4) | (params.dx != 4)
    assert np.all(np.all(out == x, axis=(1, 2, 3)) == ~shifted)
    # a crop shifted by (dy, dx) shows zero padding on the exposed border
    i = int(np.argmax(params.dy == 0))
    padded = np.pad(x[i], [(4, 4), (4, 4), (0, 0)])
    assert np.all(out[i, :4] == 0) and np.all(x > 0)
    np.testing.assert_array_equal(out[i], padded[0:8, params.dx[i] : params.dx[i] + 8])


def test_augment_float_batch_with_fill():
    x = np.ones((4, 6, 6, 3), np.float32)
    out = data.random_crop_flip(x, 0, padding=2, fill=-1.0)
    assert out.dtype == np.float32 and set(np.unique(out)) <= {-1.0, 1.0}


@pytest.mark.parametrize("padding", [0, 4])
def test_augment_large_batch_is_vectorised(padding):
    x = images(n=4096, h=32, w=32)
    out = data.random_crop_flip(x, 1, padding=padding)
    assert out.shape == x.shape
