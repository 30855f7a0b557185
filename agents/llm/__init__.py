"""Language-model agents for text games: policy with a token-level value head, constrained decoding,
behaviour cloning on gold paths and token-level PPO (POAD, NTPO, action-level, GRPO, TEMPO)."""
