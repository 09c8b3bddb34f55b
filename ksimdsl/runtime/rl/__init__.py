"""Reinforcement learning, engine-independent: PPO (GAE, losses, the jitted update), the actor-critic
networks, action distributions and observation normalization. Pure JAX; no physics."""
