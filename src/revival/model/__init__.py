"""The model side shared by every method: the one model loader (testbed or a local Stable Diffusion folder) and the denoising objective and fine-tuning loop."""
