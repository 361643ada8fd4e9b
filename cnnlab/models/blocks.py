"""Pieces several model families share."""

from torch import nn

# activation name -> layer class, so configs can say "relu" or "sigmoid"
ACTIVATIONS = dict(relu=nn.ReLU, sigmoid=nn.Sigmoid, tanh=nn.Tanh)
