"""Agent Skills, version by version; a skill's current version is what its runs get.

A skill belongs to a tenant, or is a platform skill (no tenant) that an operator grants to every
tenant or to chosen ones. Where a tenant's own skill and a granted platform skill share a name, the
tenant's own is the one its runs get.
"""

from django.db import models
from django.db.models import Q

from tenants.models import GrantedQuerySet, Tenant


class Skill(models.Model):
    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="skills",
        help_text="Empty for a platform skill, which reaches the tenants it is granted to.",
    )
    name = models.CharField(max_length=64, help_text="From SKILL.md's front matter; unique in the tenant.")
    description = models.CharField(max_length=1024)
    title = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    user_selectable = models.BooleanField(default=True, help_text="End users may choose it for a message.")
    slash_command = models.BooleanField(default=False, help_text="End users may invoke it as /name.")
    all_tenants = models.BooleanField(default=False, help_text="A platform skill: granted to every tenant.")
    granted_to = models.ManyToManyField(
        Tenant, blank=True, related_name="granted_skills", help_text="A platform skill: the tenants it is granted to."
    )
    current_version = models.ForeignKey(
        "SkillVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = GrantedQuerySet["Skill"].as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="skill_name_once_per_tenant"),
            models.UniqueConstraint(fields=["name"], condition=Q(tenant__isnull=True), name="platform_skill_name_once"),
        ]

    def __str__(self) -> str:
        return self.name if self.tenant_id else f"{self.name} (platform)"

    @property
    def is_platform(self) -> bool:
        return self.tenant_id is None

    @property
    def storage_prefix(self) -> str:
        owner = f"tenants/{self.tenant_id}" if self.tenant_id else "platform"
        return f"{owner}/skills/{self.name}/"

    def file_key(self, sha256: str) -> str:
        """Where a file of any of its versions is stored: once per checksum."""
        return f"{self.storage_prefix}files/{sha256}"


class SkillVersion(models.Model):
    skill = models.ForeignKey(Skill, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    description = models.CharField(max_length=1024)
    files = models.JSONField(
        help_text="[{path, size, sha256, executable}] of the version's files, each stored once by checksum."
    )
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64, help_text="Of the version as a whole (its sorted file list).")
    uploaded_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["skill", "-number"]
        constraints = [models.UniqueConstraint(fields=["skill", "number"], name="skill_version_once")]

    def __str__(self) -> str:
        return f"{self.skill.name} v{self.number}"
