"""Paper models: thin nn.Module definitions over fastpapers' fused ops, one file per paper."""
