"""Inputs: untrusted bytes -> image / text / waveform (limits enforced while decoding, type sniffed from content),
and preprocessing to a model's tensors. Shared by serving and training. Import from the modules themselves."""
