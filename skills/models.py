"""A tenant's Agent Skills, version by version; a skill's current version is what its runs get."""

from django.db import models

from tenants.models import Tenant


class Skill(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="skills")
    name = models.CharField(max_length=64, help_text="From SKILL.md's front matter; unique in the tenant.")
    description = models.CharField(max_length=1024)
    title = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    user_selectable = models.BooleanField(default=True, help_text="End users may choose it for a message.")
    slash_command = models.BooleanField(default=False, help_text="End users may invoke it as /name.")
    current_version = models.ForeignKey(
        "SkillVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="skill_name_once_per_tenant")]

    def __str__(self) -> str:
        return self.name


class SkillVersion(models.Model):
    skill = models.ForeignKey(Skill, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    description = models.CharField(max_length=1024)
    files = models.JSONField(help_text="[{path, size, sha256}] of the version's files, stored by checksum.")
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64, help_text="Of the version as a whole (its sorted file list).")
    uploaded_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["skill", "-number"]
        constraints = [models.UniqueConstraint(fields=["skill", "number"], name="skill_version_once")]

    def __str__(self) -> str:
        return f"{self.skill.name} v{self.number}"
