"""``cnnlab draw``: a network's architecture as a diagram.

    from cnnlab.diagram import network_diagram, save_diagram
    picture = network_diagram("resnet152")  # boxes, edges, folds and branches, as data
    picture.folds[2].blocks                 # ['layer3.1', ..., 'layer3.35']: "Bottleneck × 35"
    save_diagram(picture, "resnet152.svg")  # also .pdf, .png, .dot, .mmd and .json

build.py measures (the summary's trace, folded and split into branches); render.py only lays
the boxes out and writes them.
"""

from cnnlab.diagram.build import Box, Branches, Diagram, Edge, Fold, network_diagram
from cnnlab.diagram.render import DIAGRAM_FORMATS, diagram_format, save_diagram

__all__ = ["DIAGRAM_FORMATS", "Box", "Branches", "Diagram", "Edge", "Fold", "diagram_format", "network_diagram",
           "save_diagram"]
