"""What a model computes, layer by layer: output shape, parameters, multiply-accumulates (MACs)
and receptive field.

    from cnnlab.summary import summarize, to_csv
    summary = summarize("vgg16")                 # its natural input, 3×224×224
    summary.totals.macs                          # 15,470,264,320
    print(to_csv(summary, depth=2))

core.py builds the records (LayerRecord, Totals, ModelSummary) from one trace of the model;
the measuring lives in graph.py (trace and shapes), counts.py (parameters, MACs) and
receptive.py (receptive fields); cost.py adds what a training step costs (FLOPs forward and
backward, the memory a batch needs); report.py only renders the records.
"""

from cnnlab.summary.core import Explanation, LayerRecord, ModelSummary, Totals, parse_input_size, summarize
from cnnlab.summary.cost import LayerCost, TrainingCost, training_cost
from cnnlab.summary.report import cost_to_csv, cost_to_json, render_cost_table, render_table, to_csv, to_json, to_text

__all__ = ["Explanation", "LayerCost", "LayerRecord", "ModelSummary", "Totals", "TrainingCost", "cost_to_csv",
           "cost_to_json", "parse_input_size", "render_cost_table", "render_table", "summarize", "to_csv", "to_json",
           "to_text", "training_cost"]
