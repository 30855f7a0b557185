"""Agents: PPO with two value heads and the networks it uses."""
