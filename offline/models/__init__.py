"""The networks: spatial/temporal autoencoder (+ SSPCAB), discriminator on CLIP features, learned-noise generator."""
