"""Where a model call goes: Bedrock (SigV4-signed) or the offline model; Anthropic is the plain relay."""
