"""Scaling fits: where will an experiment's criterion be met? (runs, law, link, phase, forecast,
backtest, external)"""
