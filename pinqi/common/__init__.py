"""What PINQI and W2Q share: the U-Net blocks, the training loop, checkpoints, bounded maps,
configuration (de)serialisation, seeding, data-parallel context and parameter counts."""
