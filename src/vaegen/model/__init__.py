"""The model: the VAEs (vae), the likelihood registry with the KL term (likelihoods), and the
encoder applied to whole image sets (encode)."""
