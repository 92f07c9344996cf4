"""Scaling fits: where will an experiment's criterion be met? (see law, link, forecast, backtest)"""
from lm.scaling.compute import Trend, fit_trend, metric_map, predict  # noqa: F401  L(C), legacy
