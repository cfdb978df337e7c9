"""Per-device latency predictors: fitted from measurements, vectorised, saved with their error."""
from pipeline.predict.fit import cross_validate, fit_kind, fit_predictor
from pipeline.predict.lut import BlockLatencyTable
from pipeline.predict.metrics import error_metrics, plot_predicted_vs_measured
from pipeline.predict.predictor import LatencyPredictor, PredictorNotFound, load_predictor, save_predictor

__all__ = ["BlockLatencyTable", "LatencyPredictor", "PredictorNotFound", "cross_validate", "error_metrics",
           "fit_kind", "fit_predictor", "load_predictor", "plot_predicted_vs_measured", "save_predictor"]
