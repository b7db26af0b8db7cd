"""The servers `compare` measures wabahook against."""
