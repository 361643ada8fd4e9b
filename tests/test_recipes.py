"""Recipes and model options: the textbook's settings exactly, explicit options winning over a
recipe, every model's default recipe, GoogLeNet's auxiliary heads, and a few real trainings."""

import json
from dataclasses import fields, replace

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.config import RECIPES, TrainConfig
from cnnlab.evaluation import evaluate
from cnnlab.models import default_recipe, list_models, model_spec
from cnnlab.training import train

runner = CliRunner()

# Dive into Deep Learning, chapters 7-8 (Fashion-MNIST, 10 epochs, SGD without momentum or weight
# decay, Xavier init): lr / batch / resize of each chapter network, as the book trains it
D2L = {"lenet": (0.9, 256, 28), "alexnet_2012": (0.01, 128, 224), "vgg11_quarter": (0.05, 128, 224),
       "nin": (0.1, 128, 224), "googlenet": (0.1, 128, 96), "resnet18": (0.05, 256, 96),
       "densenet121": (0.1, 256, 96)}


def resolved(model: str, **options) -> TrainConfig:
    return TrainConfig(model=model, **options).with_recipe(model_spec(model).family, default_recipe(model))


@pytest.mark.parametrize("model", D2L)
def test_the_d2l_recipe_is_the_books_settings(model):
    config = resolved(model, recipe="d2l")
    lr, batch, resize = D2L[model]
    assert (config.lr, config.batch_size, config.resize) == (lr, batch, resize)
    assert (config.optimizer, config.momentum, config.weight_decay, config.nesterov) == ("sgd", 0.0, 0.0, False)
    assert (config.init, config.epochs, config.schedule, config.warmup_epochs) == ("xavier", 10, "constant", 0.0)
    assert (config.label_smoothing, config.normalize, config.flip) == (0.0, False, False)  # ToTensor() alone


def test_explicit_options_override_the_recipe_and_the_record_names_both(tmp_path):
    result = runner.invoke(app, ["train", "lenet", "--recipe", "d2l", "--lr", "0.5", "--epochs", "1",
                                 "--runs-dir", str(tmp_path), "--name", "r"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (saved["recipe"], saved["lr"], saved["epochs"]) == ("d2l", 0.5, 1)  # given explicitly
    assert (saved["batch_size"], saved["init"], saved["optimizer"]) == (256, "xavier", "sgd")  # the recipe's
    assert saved["set_by_recipe"]["batch_size"] == 256 and "lr" not in saved["set_by_recipe"]
    recipe_line = result.stdout.splitlines()[1]
    assert recipe_line.startswith("recipe d2l: ")
    set_by_recipe = dict(item.split(" ") for item in recipe_line.removeprefix("recipe d2l: ").split(", "))
    assert set_by_recipe["batch_size"] == "256" and set_by_recipe["optimizer"] == "sgd"
    assert "lr" not in set_by_recipe and "epochs" not in set_by_recipe  # given, so not the recipe's


def test_a_recipes_min_steps_raises_its_epochs_on_a_small_data_set_but_not_given_epochs(tmp_path, monkeypatch):
    small = RECIPES["small"]
    monkeypatch.setitem(RECIPES, "small", replace(small, by_model={"small_mlp": dict(epochs=2, min_steps=100)}))
    # 1,438 training digits in full batches of 64: 22 steps an epoch, so 100 steps take 5 epochs
    result = runner.invoke(app, ["train", "small_mlp", "--runs-dir", str(tmp_path), "--name", "raised"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "raised" / "config.json").read_text())
    assert (saved["epochs"], saved["set_by_recipe"]["epochs"], saved["set_by_recipe"]["min_steps"]) == (5, 5, 100)
    assert len((tmp_path / "raised" / "metrics.csv").read_text().splitlines()) == 1 + 5
    assert "epochs 5 (raised to reach the recipe's 100 optimiser steps" in result.stdout.splitlines()[1]
    result = runner.invoke(app, ["train", "small_mlp", "--epochs", "2", "--runs-dir", str(tmp_path), "--name", "given"])
    saved = json.loads((tmp_path / "given" / "config.json").read_text())
    assert saved["epochs"] == 2 and "min_steps" not in saved["set_by_recipe"]
    recipes = runner.invoke(app, ["models", "--recipes", "--format", "csv"]).stdout.splitlines()
    assert "small,small_mlp,epochs=2 min_steps=100," in recipes


def test_every_recipe_setting_names_an_option_a_family_or_a_model_that_exists():
    options = {f.name for f in fields(TrainConfig) if f.metadata["recipe"]} | {"min_steps"}
    families = {model_spec(name).family for name in list_models()}
    for name, recipe in RECIPES.items():
        assert set(recipe.by_family) <= families and set(recipe.by_model) <= set(list_models()), name
        for settings in (recipe.values, *recipe.by_family.values(), *recipe.by_model.values()):
            assert set(settings) <= options, (name, set(settings) - options)


def test_every_model_has_a_default_recipe_by_its_batch_norm():
    for name in list_models():
        recipe = default_recipe(name)
        assert recipe in RECIPES
        if name.startswith(("resnet", "densenet", "se_", "cbam_", "eca_", "plain")) or name.endswith("_bn"):
            assert recipe == "batchnorm", name
    assert [default_recipe(m) for m in ("lenet", "mlp", "alexnet", "vgg16", "nin", "googlenet", "googlenet_tv")] \
        == ["small", "small", "plain", "plain", "plain", "plain", "batchnorm"]


@pytest.mark.parametrize("args, message", [
    (["--recipe", "fast"], "Invalid value for '--recipe'"),
    (["--model-arg", "widht=0.5"], "lenet has no option 'widht'; did you mean width?"),
    (["--model-arg", "width=wide"], "width"),
    (["--model-arg", "width=0"], "width"),
    (["--model-arg", "in_channels=3"], "in_channels is not a model option"),
    (["--model-arg", "width"], "is not KEY=VALUE"),
])
def test_bad_recipes_and_model_options_are_one_line_and_write_nothing(tmp_path, args, message):
    result = runner.invoke(app, ["train", "lenet", "--runs-dir", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    if "Invalid value" not in message:
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_googlenet_trains_with_its_auxiliary_heads_and_evaluates_with_the_main_one(tmp_path, monkeypatch):
    from cnnlab.models import blocks

    run = train(TrainConfig(model="googlenet_tv", model_args=["aux_logits=true", "width=0.25"], resize=32,
                            epochs=3, runs_dir=str(tmp_path)), progress="none")
    rows = run.metrics.rows()
    assert rows[-1]["val_acc"] >= 0.7  # chance is 0.1
    assert evaluate(run.path).top1 == rows[-1]["val_acc"]  # eval mode: the main head alone
    # the side heads' losses are in the training loss: without them it is lower
    monkeypatch.setattr("cnnlab.training.AUX_LOSS_WEIGHT", 0.0)
    again = train(TrainConfig(model="googlenet_tv", model_args=["aux_logits=true", "width=0.25"], resize=32,
                              epochs=1, runs_dir=str(tmp_path)), progress="none")
    assert again.metrics.rows()[0]["train_loss"] < rows[0]["train_loss"]
    assert blocks.AUX_LOSS_WEIGHT == 0.3


@pytest.mark.parametrize("model, options", [
    ("lenet_relu", {}),                                             # small
    ("resnet20", {"resize": 32, "epochs": 4}),                      # batchnorm
    ("googlenet", {"resize": 32, "model_args": ["width=0.5"], "epochs": 5}),  # plain: no BatchNorm
    ("nin", {"resize": 96, "model_args": ["width=0.5"], "epochs": 5}),        # plain, He init, 1x1 class maps
])
def test_default_recipes_learn_the_digits(tmp_path, model, options):
    run = train(TrainConfig(model=model, runs_dir=str(tmp_path), **options), progress="none")
    assert max(row["val_acc"] for row in run.metrics.rows()) >= 0.9


def test_a_long_epoch_is_announced_with_sizes_that_would_be_quick(tmp_path, monkeypatch):
    monkeypatch.setattr("cnnlab.training.matmul_rate", lambda placement: 1e8)  # a slow machine
    result = runner.invoke(app, ["train", "nin", "--epochs", "1", "--resize", "224", "--runs-dir", str(tmp_path),
                                 "--name", "n", "--model-arg", "width=0.0625", "--batch-size", "719"])
    note = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert note and "min on cpu" in note[0]
    # NiN takes 67 pixels at the least: no --resize below that is suggested
    suggested = [int(word) for word in note[0].replace(",", " ").split() if word.isdigit()]
    assert "--resize 64" not in note[0] and "--resize 32" not in note[0], note[0]
    assert suggested
