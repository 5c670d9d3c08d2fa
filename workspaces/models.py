"""A conversation's files, version by version: what the agent and the user wrote, kept in storage."""

from django.db import models
from django.db.models import OuterRef, Subquery

from conversations.models import Conversation, Run


class WorkspaceFileQuerySet(models.QuerySet["WorkspaceFile"]):
    def current(self) -> "WorkspaceFileQuerySet":
        """The latest version of each path, where that version is not a deletion: the conversation's tree."""
        latest = (
            WorkspaceFile.objects.filter(conversation=OuterRef("conversation"), path=OuterRef("path"))
            .order_by("-version")
            .values("version")[:1]
        )
        return self.filter(version=Subquery(latest), deleted=False)


class WorkspaceFile(models.Model):
    """One version of one path in a conversation's workspace; a deletion is a version too."""

    class Source(models.TextChoices):
        USER = "user", "User"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024, help_text="Relative to /workspace, with forward slashes.")
    version = models.PositiveIntegerField()
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, help_text="Of the content; empty for a deletion.")
    content_type = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="files")
    presented = models.BooleanField(default=False, help_text="The agent offers this file to the user.")
    deleted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = WorkspaceFileQuerySet.as_manager()

    class Meta:
        ordering = ["path", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "path", "version"], name="workspace_file_version_once")
        ]

    def __str__(self) -> str:
        return f"{self.path} v{self.version}"
