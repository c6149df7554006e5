"""The world models (RSSM and other state-space families), their losses, and the Learner."""
