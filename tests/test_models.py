import pytest
import torch

from nnlab.models import CNN, MLP, Linear

MNIST, SPIRAL = (1, 28, 28), (2,)


@pytest.mark.parametrize("make", [Linear, MLP, CNN])
def test_logits_shape_on_mnist(make):
    net = make(in_shape=MNIST, num_classes=10)
    assert net(torch.rand(5, *MNIST)).shape == (5, 10)


@pytest.mark.parametrize("make", [Linear, MLP])
def test_logits_shape_on_spiral(make):
    net = make(in_shape=SPIRAL, num_classes=3)
    assert net(torch.randn(7, *SPIRAL)).shape == (7, 3)


def test_cnn_refuses_non_image_data_naming_the_fix():
    with pytest.raises(ValueError, match="C x H x W images.*data=mnist"):
        CNN(in_shape=SPIRAL, num_classes=3)


@pytest.mark.parametrize("make,count", [(Linear, 7_850), (MLP, 79_510), (CNN, 8_490)])
def test_parameter_counts_match_the_notebook_architectures(make, count):
    assert sum(p.numel() for p in make().parameters()) == count


def test_cnn_is_the_notebooks_layer_stack():
    net = CNN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 10, (5, 5), (1, 1), (0, 0)), (10, 20, (5, 5), (1, 1), (0, 0))]
    assert (net.fc.in_features, net.fc.out_features) == (320, 10)


@pytest.mark.parametrize("make", [Linear, MLP])
def test_notebook_init_is_small_gaussian_weights_and_zero_biases(make):
    torch.manual_seed(0)
    net = make(in_shape=(784,), num_classes=10, init_std=0.01)
    for name, p in net.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0)
        else:
            assert abs(p.std().item() - 0.01) < 0.001 and abs(p.mean().item()) < 0.001
