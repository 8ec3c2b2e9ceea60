"""Sampling: latent priors (priors: N(0, I), the fitted Gaussian mixture of mixture, the aggregate
posterior of aggregate_posterior), generate, and the files it writes (writers)."""
