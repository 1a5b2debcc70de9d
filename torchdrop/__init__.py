"""torchdrop: the PyTorch twin of jaxdrop."""
