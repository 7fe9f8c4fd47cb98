"""Analyses reproducing the papers' studies (single-neuron SQNR, ...)."""
