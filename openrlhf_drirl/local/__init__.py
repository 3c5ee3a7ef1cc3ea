"""OpenRLHF's PPO/GRPO training in one process (CPU or one GPU): ``python -m openrlhf_drirl.cli.train_ppo_local``.

OpenRLHF's own code runs wherever it can without Ray, vLLM and DeepSpeed: ``PPOTrainer.fit`` (prompt dataloader,
``PromptDataset``, checkpoints, logging, evaluation), ``SamplesGenerator`` and the agent executor (the remote
reward request), the experience maker (``DRIRLExperienceMaker`` with any registered estimator), ``PolicyModelActor``
/ ``ReferenceModelActor`` and ``ActorPPOTrainer`` (``PolicyLoss``, replay buffer, KL as a loss). Replaced, each in
one place and only because it cannot run here:

- Ray (``stand_ins.py``): ``ray.get/put/wait`` in OpenRLHF's trainer modules and ``.remote`` on actor handles call
  the local objects directly; a ``RayActorGroup`` holds one in-process actor;
- vLLM (``rollout.py``): the rollout engine is OpenRLHF's own ``RolloutRayActor.generate_responses`` over the
  generation layer's Hugging Face backend, which samples from the live policy (no weight broadcast needed);
- DeepSpeed (``openrlhf_drirl.training.TorchStrategy``): plain-torch optimizer steps, checkpoints and collectives
  over a one-process gloo group;
- on CPU, the few direct CUDA calls of OpenRLHF's actors (``torch.cuda.current_device``/``synchronize``) answer
  for the CPU, and ``--ds.param_dtype fp32`` is accepted (DeepSpeed trains in bf16/fp16; a CPU trains in fp32).
"""
