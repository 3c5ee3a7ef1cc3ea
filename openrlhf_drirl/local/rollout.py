"""The rollout engine without vLLM: OpenRLHF's own ``RolloutRayActor.generate_responses`` (n samples of a prompt
through the agent executor, which also requests the reward), with its one vLLM call, ``generate``, answered by the
generation layer's Hugging Face backend. Requests of a whole rollout are generated as batches, from the live policy
(so there are no weights to broadcast after an update)."""

import asyncio
from types import SimpleNamespace

from openrlhf_drirl.generation.hf import HFGenerator


def _openrlhf_generate_responses():
    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

    return RolloutRayActor.__ray_actor_class__.generate_responses


class LocalRolloutEngine:
    """``executor``: OpenRLHF's agent executor (``SingleTurnAgentExecutor(--reward.remote_url)`` or the user's);
    ``generator``: an ``HFGenerator`` over the policy, bound once the policy is loaded."""

    def __init__(self, executor, reward_flag: str, generator: HFGenerator = None):
        self.executor, self.reward_flag, self.generator = executor, reward_flag, generator
        self.queue = []

    def get_num_unfinished_requests(self) -> int:
        return 0

    async def generate_responses(
        self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples=1, images=None
    ):
        outputs = await _openrlhf_generate_responses()(
            self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples, images
        )
        if any(output["reward"] is None for output in outputs):
            # OpenRLHF's executor logs a failed reward request at INFO level and carries on with reward None.
            raise RuntimeError(
                f"no reward came back for prompt {prompt[:80]!r} from {self.reward_flag}: is the reward server up and "
                "answering OpenRLHF's request format? (each try is logged at INFO level)"
            )
        return outputs

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        if multi_modal_data:
            raise ValueError("image prompts need vLLM: the one-process trainer generates text only")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.append((list(prompt_token_ids), sampling_params, future))
        if len(self.queue) == 1:
            loop.create_task(self._generate_queued())
        return await future

    async def _generate_queued(self):
        # Every concurrent request reaches the queue on its first step (the executor tokenizes, then calls generate):
        # wait until the queue stops growing, then generate it all.
        size = -1
        while size != len(self.queue):
            size = len(self.queue)
            await asyncio.sleep(0)
        batch, self.queue = self.queue, []
        try:  # from the grouping on: any error reaches every waiting request instead of leaving it hanging
            groups = {}
            for item in batch:
                params = item[1]
                groups.setdefault((params.max_tokens, params.temperature, params.top_p), []).append(item)
            for (max_tokens, temperature, top_p), items in groups.items():
                results = self.generator.generate_token_ids(
                    [ids for ids, _, _ in items], max_new_tokens=max_tokens, temperature=temperature, top_p=top_p
                )
                for (_, _, future), (token_ids, finish_reason) in zip(items, results):
                    output = SimpleNamespace(token_ids=token_ids, finish_reason=finish_reason, logprobs=None)
                    future.set_result(SimpleNamespace(outputs=[output]))
        except Exception as e:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(e)
