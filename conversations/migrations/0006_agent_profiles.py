import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("conversations", "0005_run_launch_seconds"),
        ("tenants", "0007_model_prices"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="agent",
            field=models.ForeignKey(
                blank=True,
                help_text="Its agent profile; empty: the tenant's default agent.",
                null=True,
                on_delete=django.db.models.deletion.RESTRICT,
                related_name="conversations",
                to="agents.agentprofile",
            ),
        ),
        migrations.AddField(
            model_name="conversation",
            name="agent_version",
            field=models.ForeignKey(
                blank=True,
                help_text="A version it is pinned to (name@version); empty: its agent's current version.",
                null=True,
                on_delete=django.db.models.deletion.RESTRICT,
                related_name="+",
                to="agents.agentversion",
            ),
        ),
        migrations.AddField(
            model_name="conversation",
            name="context_usage",
            field=models.JSONField(
                blank=True,
                help_text="How full its context window was after its last turn (event context.usage).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="agent_version",
            field=models.ForeignKey(
                blank=True,
                help_text="The agent profile version it ran with (its run.queued event keeps the name and number).",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="runs",
                to="agents.agentversion",
            ),
        ),
        migrations.AlterField(
            model_name="conversation",
            name="model",
            field=models.ForeignKey(
                blank=True,
                help_text="A model it names over its agent's; empty: its agent's model.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="conversations",
                to="tenants.languagemodel",
            ),
        ),
    ]
