"""Per-device latency predictors: fitted from measurements, vectorised, saved with their error."""
from pipeline.predict.fit import cross_validate, fit_kind, fit_predictor
from pipeline.predict.lut import BlockLatencyTable
from pipeline.predict.metrics import error_metrics, plot_predicted_vs_measured
from pipeline.predict.predictor import LatencyPredictor, PredictorNotFound, load_predictor, save_predictor
from pipeline.predict.transfer import fit_transfer, transfer_study
from pipeline.predict.workflow import evaluate_device, fit_device, load_block_table, load_dataset

__all__ = ["BlockLatencyTable", "LatencyPredictor", "PredictorNotFound", "cross_validate", "error_metrics",
           "evaluate_device", "fit_device", "fit_kind", "fit_predictor", "fit_transfer", "load_block_table",
           "load_dataset", "load_predictor", "plot_predicted_vs_measured", "save_predictor", "transfer_study"]
