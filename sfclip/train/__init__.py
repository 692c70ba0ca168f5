"""Training: the loop (`loop.Trainer`, `loop.train`), optimizer and schedule (`optim`), checkpoint state
(`state`), distributed helpers (`dist`), logs and metrics (`logs`) and periodic evaluation (`eval_hook`).

Nothing is imported here: `sfclip.config` imports the config dataclasses of `eval_hook`, `logs` and
`optim`, and the loop imports `sfclip.config`, so importing the loop from this file would be a cycle.
"""
