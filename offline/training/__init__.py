"""Training: the autoencoder and discriminator loops, training windows, run directory, DDP helpers, bundle export."""
