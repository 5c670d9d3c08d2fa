"""What the runs app stores of its own: messages on their way into a running run (busy policy `steer`)."""

from django.db import models

from conversations.models import Run


class PendingSteer(models.Model):
    """A message sent to steer a running run, until that run's worker takes it in.

    The message is stored as a queued Run behind the active one (`message`), without events yet: when the
    worker takes it, the row goes and `message.steered` is recorded on the running run (`into`), in one
    transaction (`runs.steering.take_steers`); when `into` ends first, the message falls back to the queue and
    runs after it, with the `run.queued` event stored here (`runs.dispatch.promote_next`). Either, never both.
    """

    message = models.OneToOneField(Run, primary_key=True, on_delete=models.CASCADE, related_name="+")
    into = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+", help_text="The running run to steer.")
    queued = models.JSONField(help_text="The message's `run.queued` data, recorded if it runs on its own after all.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["into", "created_at"])]

    def __str__(self) -> str:
        return f"message {self.message_id} into run {self.into_id}"
