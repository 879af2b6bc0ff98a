"""relaxjax.train.presets: the papers' settings in one place, the command's defaults."""

import dataclasses

import pytest

from relaxjax.train import cli, presets
from relaxjax.train.optimizers import OPTIMIZERS


def _parsed(*argv):
    return cli.config_from_args(cli.build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "cifar10-jpeg", "cifar100"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_command_without_options_is_the_preset(dataset, optimizer):
    config = _parsed("--dataset", dataset, "--optimizer", optimizer)
    expected = presets.preset(dataset, optimizer, data_dir=config.data_dir)
    assert config == expected


def test_options_given_on_the_command_line_override_the_preset():
    config = _parsed("--optimizer", "parle", "--replicas", "2", "-L", "5", "--lr", "0.3")
    assert config.optimizer.replicas == 2 and config.optimizer.num_steps == 5
    assert config.optimizer.lr == 0.3
    assert config.optimizer.elastic_rho == pytest.approx(0.001 * 5 * 2)  # follows L and n
    assert _parsed("--optimizer", "hj", "--noise", "0.1").optimizer.noise == 0.0  # HJ: none
    assert _parsed("--epochs", "8").optimizer.lr_milestones == (4.0, 6.0)


def test_the_papers_values():
    mnist, cifar = presets.mnist(), presets.cifar10()
    assert (mnist.model, mnist.optimizer.gamma, mnist.optimizer.weight_decay) == (
        "mnistfc",
        1e4,
        0.0,
    )
    assert (cifar.model, cifar.optimizer.weight_decay) == ("allcnn", 1e-3)
    assert cifar.optimizer.gamma == pytest.approx(1 / 0.03)
    assert presets.mnist("sgd").optimizer.lr == 0.1
    assert presets.mnist("adam").optimizer.lr == 1e-3
    assert presets.mnist("entropy-adam").optimizer.step_size == 1e-3
    assert presets.mnist("parle").optimizer.gamma == 100.0
    assert presets.mnist("parle").optimizer.noise == 0.0
    assert presets.mnist("sgd", replicas=5).optimizer.replicas == 1  # only Parle has replicas


def test_unknown_overrides_are_refused():
    with pytest.raises(TypeError, match="lr_typo"):
        presets.mnist(lr_typo=1.0)
    with pytest.raises(TypeError, match="gama"):
        presets.optimizer_preset("sgd", gama=1.0)


def test_presets_are_plain_data():
    config = presets.cifar10("hj", seed=3, epochs=10)
    assert dataclasses.replace(config) == config  # frozen dataclasses: comparable, copyable
    assert config.seed == 3 and config.optimizer.lr_milestones == (5.0, 7.5)
