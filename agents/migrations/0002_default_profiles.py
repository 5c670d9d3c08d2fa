"""Every tenant gets its default agent: version 1 holds the tenant's system prompt and default model, and
its conversations keep running as they did, now on that agent (their model stays theirs)."""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def create_default_profiles(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Tenant = apps.get_model("tenants", "Tenant")
    AgentProfile = apps.get_model("agents", "AgentProfile")
    AgentVersion = apps.get_model("agents", "AgentVersion")
    Conversation = apps.get_model("conversations", "Conversation")
    for tenant in Tenant.objects.exclude(agents__is_default=True):
        taken = set(AgentProfile.objects.filter(tenant=tenant).values_list("name", flat=True))
        name = next(n for n in ("default", "default-agent", "tenant-default") if n not in taken)
        profile = AgentProfile.objects.create(tenant=tenant, name=name, is_default=True, choosable=True)
        version = AgentVersion.objects.create(
            profile=profile,
            number=1,
            instructions=tenant.system_prompt,
            model_id=tenant.default_model_id,
            created_by="migration: the tenant's system prompt and default model",
        )
        profile.current_version = version
        profile.save(update_fields=["current_version"])
        Conversation.objects.filter(tenant=tenant, agent__isnull=True).update(agent=profile)


def restore_system_prompts(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Tenant = apps.get_model("tenants", "Tenant")
    AgentProfile = apps.get_model("agents", "AgentProfile")
    for profile in AgentProfile.objects.filter(is_default=True).select_related("current_version"):
        if profile.current_version is not None:
            Tenant.objects.filter(pk=profile.tenant_id).update(system_prompt=profile.current_version.instructions)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("tenants", "0007_model_prices"),
        ("conversations", "0006_agent_profiles"),
    ]

    operations = [migrations.RunPython(create_default_profiles, restore_system_prompts)]
