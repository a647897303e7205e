"""nnlab against the notebook's hand-derived math: autograd must give its gradients, and one step
of nnlab's optimizer must be its manual update."""
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from nnlab.classifier import Classifier
from nnlab.models import MLP, Linear

N, D, K, REG = 300, 2, 3, 1e-3


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g, dtype=torch.float64), torch.randint(0, K, (N,), generator=g)


def nnlab_loss(net, x, y):
    # the objective nnlab trains on: cross-entropy + the Classifier's 0.5 * l2 * sum(W**2)
    module = Classifier(net, optimizer=torch.optim.SGD, l2=REG)
    return F.cross_entropy(net(x), y) + module.l2_penalty()


def dscores(scores, y):
    # the notebook: probs; probs[range(n), y] -= 1; /= n
    d = scores.softmax(1)
    d[torch.arange(len(y)), y] -= 1
    return d / len(y)


def test_linear_gradients_are_the_notebooks():
    torch.manual_seed(0)
    net = Linear(in_shape=(D,), num_classes=K, init_std=0.01).double()
    with torch.no_grad():
        net.fc.bias.normal_()  # non-zero, so the bias gradient is not trivially checked at b = 0
    x, y = batch()
    nnlab_loss(net, x, y).backward()
    W, b = net.fc.weight.detach().T, net.fc.bias.detach()  # notebook layout: W (D, K), scores = X @ W + b
    d = dscores(x @ W + b, y)
    dW = x.T @ d + REG * W
    db = d.sum(0)
    torch.testing.assert_close(net.fc.weight.grad.T, dW, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(net.fc.bias.grad, db, rtol=1e-10, atol=1e-12)


def test_mlp_gradients_are_the_notebooks_backprop_through_relu():
    torch.manual_seed(1)
    net = MLP(in_shape=(D,), num_classes=K, hidden=100).double()  # default init: many ReLUs active
    x, y = batch()
    nnlab_loss(net, x, y).backward()
    W, b = net.fc1.weight.detach().T, net.fc1.bias.detach()
    W2, b2 = net.fc2.weight.detach().T, net.fc2.bias.detach()
    hidden = (x @ W + b).clamp(min=0)
    d = dscores(hidden @ W2 + b2, y)
    dW2, db2 = hidden.T @ d + REG * W2, d.sum(0)
    dhidden = d @ W2.T
    dhidden[hidden <= 0] = 0  # backprop the ReLU non-linearity
    dW, db = x.T @ dhidden + REG * W, dhidden.sum(0)
    assert 0 < (hidden > 0).float().mean() < 1  # the ReLU mask really cuts something
    for got, want in ((net.fc2.weight.grad.T, dW2), (net.fc2.bias.grad, db2),
                      (net.fc1.weight.grad.T, dW), (net.fc1.bias.grad, db)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("overrides", [[], ["scheduler=none"], ["experiment=spiral_mlp"]])
def test_one_step_of_nnlabs_optimizer_is_the_manual_update(overrides, make_cfg):
    cfg = make_cfg(*overrides)
    torch.manual_seed(0)
    net = MLP(in_shape=(D,), num_classes=K)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    x, y = batch()
    F.cross_entropy(net(x.float()), y).backward()
    lr = cfg.optimizer.lr
    expected = [(p - lr * p.grad).detach() for p in net.parameters()]  # the lecture's f.data.sub_(lr * f.grad)
    optimizer.step()
    for p, want in zip(net.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), want, rtol=0, atol=0)
