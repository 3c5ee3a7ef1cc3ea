"""OpenRLHF's ``Actor`` with logits computed only where log-probs are read: the response.

``Actor.forward`` projects every position onto the vocabulary and takes a log-softmax over all of them, then keeps the
last ``action_mask.shape[1]`` log-probs. For a small model on a CPU that projection is a large share of a forward
(SmolLM2-135M: a 49k vocabulary over 576 dimensions, applied to the prompt too). Here the model is asked for the
logits of the last ``num_actions + 1`` positions only (Hugging Face's ``logits_to_keep``); the log-probs are the
same numbers, computed by OpenRLHF's ``log_probs_from_logits``. Packed, multimodal or entropy-returning calls go to
OpenRLHF's own forward unchanged.
"""

import torch
from openrlhf.models import Actor
from openrlhf.models.utils import log_probs_from_logits


class ResponseLogitsActor(Actor):
    def forward(self, sequences, action_mask=None, attention_mask=None, return_output=False, **kwargs):
        # Any option set (ring attention, packing, entropy, full log-probs, multimodal inputs): OpenRLHF's forward.
        if action_mask is None or self.packing_samples or getattr(self, "is_vlm", False) or any(kwargs.values()):
            return super().forward(sequences, action_mask, attention_mask, return_output, **kwargs)
        num_actions = action_mask.shape[1]
        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids.masked_fill_(attention_mask == 0, 1)
        output = self.model(
            sequences, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=num_actions + 1
        )
        logits = output["logits"].to(torch.float32)
        if self.temperature != 1.0:
            logits.div_(self.temperature)
        # Position t predicts token t + 1: the kept positions but the last predict the response tokens.
        log_probs = log_probs_from_logits(logits[:, :-1], sequences[:, -num_actions:])
        action_log_probs = log_probs * action_mask.float()
        return (action_log_probs, output) if return_output else action_log_probs
