# bash completion for ccdockerctl(1): commands, their options, and session IDs from `ccdockerctl list`
# (of the same bus: --user is passed on). Installed as
# /usr/share/bash-completion/completions/ccdockerctl.

_ccdockerctl_ids() {
        local bus=$1
        # The first column of list's table, without its header; nothing when the daemon does not answer.
        ccdockerctl $bus list 2>/dev/null | awk 'NR > 1 { print $1 }'
}

_ccdockerctl() {
        local cur prev words cword
        _init_completion || return

        local commands="create run list tree children status send output attach result budget stop remove token"
        local global="--help --version --system --user --json"
        local create="--image --memory --cpus --tasks --timeout --workspace --task-type --env --network --secret --allow-host"
        local cmd="" bus="" i
        for ((i = 1; i < cword; i++)); do
                case ${words[i]} in
                --user) bus=--user ;;
                --system) bus=--system ;;
                -*) ;;
                *)
                        if [[ -z $cmd ]]; then
                                cmd=${words[i]}
                        fi
                        ;;
                esac
        done

        case $prev in
        --network)
                COMPREPLY=($(compgen -W "none host" -- "$cur"))
                return
                ;;
        --workspace)
                COMPREPLY=($(compgen -W "ephemeral" -- "$cur"))
                _filedir -d
                return
                ;;
        --tokens)
                _filedir
                return
                ;;
        --image | --memory | --cpus | --tasks | --timeout | --task-type | --env | --secret | --allow-host | \
                --since | --limit | --usd | --prompt)
                return
                ;;
        esac

        if [[ -z $cmd ]]; then
                COMPREPLY=($(compgen -W "$commands $global" -- "$cur"))
                return
        fi

        local opts=""
        case $cmd in
        create) opts="$create --prompt" ;;
        run) opts="$create --keep" ;;
        output) opts="--since --limit" ;;
        attach) opts="--since" ;;
        result) opts="--wait --timeout" ;;
        budget) opts="--usd --tokens" ;;
        stop) opts="--force" ;;
        token) opts="--tokens" ;;
        esac

        if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "$opts $global" -- "$cur"))
                return
        fi

        case $cmd in
        tree | children | status | send | output | attach | result | budget | stop | remove)
                # Only the first word after the command is an ID.
                local n=0
                for ((i = 1; i < cword; i++)); do
                        [[ ${words[i]} == -* ]] || n=$((n + 1))
                done
                [[ $n -eq 1 ]] && COMPREPLY=($(compgen -W "$(_ccdockerctl_ids "$bus")" -- "$cur"))
                ;;
        token)
                local n=0
                for ((i = 1; i < cword; i++)); do
                        [[ ${words[i]} == -* ]] || n=$((n + 1))
                done
                [[ $n -eq 1 ]] && COMPREPLY=($(compgen -W "create list revoke" -- "$cur"))
                ;;
        esac
} &&
        complete -F _ccdockerctl ccdockerctl
