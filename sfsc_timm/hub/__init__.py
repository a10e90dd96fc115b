"""Hugging Face Hub: export a trained supernet as one repository (weights, config, model card, heatmap), push it, and
export any single width for deployment (ONNX, TorchScript, torch.export)."""
from .deploy import DeployError, DeployResult, export_width, load_embedding_model
from .export import export_run
from .measure import Measurement, WidthStats, measure_widths
from .model_card import build_model_card
from .push import PushError, PushResult, push
from .run_folder import ExportError, RunFolder, read_metrics, read_run
