"""The arq worker: runs intents against Cryptolens, one effect each."""
