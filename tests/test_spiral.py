import math

import pytest
import torch

from nnlab.data.spiral import SpiralDataModule, make_spiral


def test_shape_labels_and_class_major_order():
    x, y = make_spiral(n=100, k=3, seed=0)
    assert x.shape == (300, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, torch.arange(3).repeat_interleave(100))


def test_radius_is_linspace_and_angle_follows_its_arm():
    n, k = 100, 3
    x, _ = make_spiral(n=n, k=k, seed=1, noise=0.2)
    r = torch.linspace(0, 1, n)
    for j in range(k):
        arm = x[j * n:(j + 1) * n]
        assert torch.allclose(arm.norm(dim=1), r, atol=1e-6)
        # x = (r sin t, r cos t): t = atan2(x0, x1), compared mod 2*pi with the arm's linspace
        t = torch.atan2(arm[1:, 0], arm[1:, 1])
        expected = torch.linspace(4.0 * j, 4.0 * (j + 1), n)[1:]
        gap = torch.remainder(t - expected + math.pi, 2 * math.pi) - math.pi
        assert gap.abs().max() < 5 * 0.2 and gap.std() > 0.1  # noise ~ 0.2 * randn


def test_noise_free_spiral_is_exact():
    x, _ = make_spiral(n=5, k=2, seed=0, noise=0.0)
    t = torch.linspace(4.0, 8.0, 5)
    r = torch.linspace(0.0, 1.0, 5)
    assert torch.allclose(x[5:], torch.stack([r * t.sin(), r * t.cos()], 1))


def test_seeded():
    assert torch.equal(make_spiral(seed=3)[0], make_spiral(seed=3)[0])
    assert not torch.equal(make_spiral(seed=3)[0], make_spiral(seed=4)[0])


def test_datamodule_full_batch_and_fresh_draws_for_evaluation():
    dm = SpiralDataModule(n=50, k=4, seed=7, steps_per_epoch=3)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and all(torch.equal(b[0], batches[0][0]) for b in batches)
    x, y = batches[0]
    assert x.shape == (200, 2) and dm.num_classes == 4 and dm.in_shape == (2,)
    (xv, _), = list(dm.val_dataloader())
    (xt, _), = list(dm.test_dataloader())
    assert not torch.equal(x, xv) and not torch.equal(xv, xt)
    assert torch.equal(x, make_spiral(50, 4, seed=7)[0])


def test_a_full_batch_epoch_is_100_steps_unless_set_and_a_minibatch_epoch_one_pass():
    assert SpiralDataModule(n=50, k=4).train_repeat == 100
    assert SpiralDataModule(n=50, k=4, batch_size=64).train_repeat == 1
    with pytest.raises(ValueError) as e:  # it would be silently ignored: an epoch is one pass over the data
        SpiralDataModule(n=50, k=4, batch_size=64, steps_per_epoch=30)
    assert "data.steps_per_epoch=30 counts full-batch steps, but data.batch_size=64" in str(e.value)
    assert "drop data.steps_per_epoch (null), or train full batch with data.batch_size=null" in str(e.value)


def test_datamodule_holds_its_sets_on_the_device_and_serves_batches_there():
    # "meta" stands in for a GPU here: tensors with a device and shapes but no storage.
    dm = SpiralDataModule(n=50, k=4, seed=7, batch_size=64)
    dm.setup()
    dm.to(torch.device("meta"))
    assert {t.device.type for split in (dm.train_set, dm.val_set, dm.test_set) for t in split} == {"meta"}
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())  # shuffled: the permutation is drawn on the CPU, then moved
    assert [b[0].shape for b in batches] == [(64, 2), (64, 2), (64, 2), (8, 2)]
    assert all(x.device.type == y.device.type == "meta" for x, y in batches)
    x = dm.train_set[0]
    dm.to(torch.device("meta"))  # no copy where they already are
    assert dm.train_set[0] is x
